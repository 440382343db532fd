"""Active learning: the query strategies (one signature each) and VAAL's networks.
"""

"""What every script shares: its command line (`flag`, `parse_config`, `--config` replay), `run_main`
(one error line, never a traceback), seeding and device, result files written atomically, and number
formatting for tables. The card's utils module, re-exported from the library (`safehil.settings.cli`,
`safehil.core`)."""
from safehil.core.spreadsheet import atomic_write_spreadsheet_csv, unprotect_cell
from safehil.core.utils import (InputError, atomic_write_csv, atomic_write_json, atomic_write_text,
                                cleanup_distributed, fmt_num, fmt_pct, format_mean_std, is_main_process, load_checkpoint,
                                log, main_process_first, mean_or_nan, mean_std, progress_enabled, read_json, require,
                                resolve_device, seed_everything, setup_distributed)
from safehil.core.errors import run_main
from safehil.settings.cli import (MAX_SEED, HelpFormatter, add_config_flags, add_replay_flag, config_from_args,
                                  config_to_dict, flag, parse_config, save_config, setting_sources, with_sources)

__all__ = ["InputError", "MAX_SEED", "HelpFormatter", "add_config_flags", "add_replay_flag", "atomic_write_csv",
           "atomic_write_json", "atomic_write_spreadsheet_csv", "atomic_write_text", "cleanup_distributed",
           "config_from_args", "config_to_dict", "flag", "fmt_num", "fmt_pct", "format_mean_std",
           "is_main_process", "load_checkpoint", "log", "main_process_first", "mean_or_nan", "mean_std",
           "parse_config", "progress_enabled", "read_json", "require", "resolve_device", "run_main", "save_config",
           "seed_everything", "setting_sources", "setup_distributed", "unprotect_cell", "with_sources"]

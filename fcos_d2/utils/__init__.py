"""Small helpers with no model code: the description of the machine a number was measured on,
strict JSON files, console logging that follows sys.stdout, malloc that keeps freed memory."""

from .errors import CommandError
from .jsonio import write_json
from .logger import setup_command_logger
from .machine import cpu_info, describe_cpu
from .memory import keep_freed_memory

__all__ = [
    "CommandError",
    "cpu_info",
    "describe_cpu",
    "keep_freed_memory",
    "setup_command_logger",
    "write_json",
]

"""Small helpers with no model code: the description of the machine a number was measured on,
strict JSON files."""

from .jsonio import write_json
from .machine import cpu_info, describe_cpu

__all__ = ["cpu_info", "describe_cpu", "write_json"]

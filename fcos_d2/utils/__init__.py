"""Small helpers with no model code: the description of the machine a number was measured on."""

from .machine import cpu_info, describe_cpu

__all__ = ["cpu_info", "describe_cpu"]

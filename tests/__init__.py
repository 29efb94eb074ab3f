"""The tests, a package so that their helpers import as ``tests.common_utils`` and so on."""

import contextlib
import io
import logging

from fcos_d2.utils import setup_command_logger


def test_command_logger_writes_to_the_stdout_of_each_call_after_the_first_is_closed():
    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(first):
        setup_command_logger("fcos_d2_test_logger").info("first run")
    first.close()  # as pytest's capsys closes a test's stream
    with contextlib.redirect_stdout(second):
        logger = setup_command_logger("fcos_d2_test_logger")
        logger.info("second run")
    out = second.getvalue()
    assert "second run" in out and "first run" not in out
    console = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    assert len(console) == 1  # the second call added no handler


def test_command_logger_keeps_detectron2s_log_file(tmp_path):
    logger = setup_command_logger("fcos_d2_test_logger_file", str(tmp_path))
    logger.info("to the file")
    for h in logger.handlers:
        h.flush()
    assert "to the file" in (tmp_path / "log.txt").read_text()


def test_quantization_tools_draw_no_progress_bars_inside_the_quiet_block(capsys):
    """NNCF draws its calibration progress with rich on stdout; the benchmark and the export
    command run it inside quiet_quantization_tools."""
    from nncf.common.logging.track_progress import track

    from fcos_d2.utils.logger import quiet_quantization_tools

    list(track(range(3), description="Statistics collection"))
    assert "Statistics collection" in capsys.readouterr().out  # drawn outside the block
    with quiet_quantization_tools():
        list(track(range(3), description="Statistics collection"))
    assert capsys.readouterr().out == ""

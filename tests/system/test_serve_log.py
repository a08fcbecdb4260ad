"""`mmroute serve` shows the server's own log lines (retrain outcomes, reloads), not only uvicorn's."""

from __future__ import annotations

import logging

from mmroute.server.runner import show_mmroute_log


def test_serve_log_level_reaches_the_mmroute_loggers(capsys):
    logger = logging.getLogger("mmroute")
    before_handlers, before_level, before_propagate = list(logger.handlers), logger.level, logger.propagate
    root_handler = logging.StreamHandler()  # as a library configuring the root logger adds: no second copy
    logging.getLogger().addHandler(root_handler)
    try:
        show_mmroute_log("info")
        show_mmroute_log("info")  # a second call adds no second handler
        logging.getLogger("mmroute.server").info("retrain kept: only 4 of 38 new judgment(s) fall in the held-out slice")
        logging.getLogger("mmroute.server").debug("not at info")
        err = capsys.readouterr().err
        assert err.count("retrain kept: only 4 of 38") == 1
        assert "not at info" not in err
        show_mmroute_log("warning")
        logging.getLogger("mmroute.server").info("quiet now")
        assert "quiet now" not in capsys.readouterr().err
    finally:
        logger.handlers[:] = before_handlers
        logger.setLevel(before_level)
        logger.propagate = before_propagate
        logging.getLogger().removeHandler(root_handler)

"""Job types every server has: enough to see what jobtrail captures without writing one."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import warnings

from jobtrail.registry import job
from jobtrail.worker.runtime import progress

log = logging.getLogger("jobtrail.demo")


@job("sleep")
def sleep(seconds: float = 1.0, steps: int = 10) -> dict[str, float]:
    """Wait, reporting progress; the smallest job there is."""
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        progress(100 * step / steps, f"step {step}/{steps}")
        log.info("step %d of %d done", step, steps)
    return {"slept": seconds}


@job("demo")
def demo(steps: int = 6, delay: float = 0.3, fail: bool = False) -> dict[str, int]:
    """Emit every kind of output jobtrail captures: loggers, threads, print, a child process.

    With ``fail`` it ends with an exception, to show how a failure reads.
    """
    log.info("demo job starting: %d steps, %.1fs apart", steps, delay)
    logging.getLogger("some.library").debug("a library's DEBUG record is captured too")

    def background() -> None:
        for i in range(3):
            log.info("background thread tick %d", i)
            time.sleep(delay / 2)

    thread = threading.Thread(target=background, name="demo-background")
    thread.start()
    for step in range(1, steps + 1):
        progress(100 * (step - 1) / steps, f"step {step} of {steps}")
        print(f"print(): working on step {step}")
        if step == 2:
            child = (
                "import sys; print('child stdout line');print('child stderr line', file=sys.stderr)"
            )
            subprocess.run([sys.executable, "-c", child], check=True)
        if step == 3:
            warnings.warn("this is what a Python warning looks like", UserWarning, stacklevel=1)
        if step == 4:
            log.warning("step %d took longer than expected", step)
        time.sleep(delay)
    thread.join()
    if fail:
        raise RuntimeError("demo failure requested with fail=true")
    log.info("demo job done")
    return {"steps": steps}

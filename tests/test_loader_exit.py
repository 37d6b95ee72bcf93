"""A script that uses the loader ends as Python would, whether or not it calls ``close()``
(tsn_dali.data.render.lifetime): after one batch, on an uncaught exception with a live
iterator, and on Ctrl-C, for each executor a CPU runs. Each case runs in a subprocess and
checks the exit status and that stderr holds nothing but the loader's own log lines and what
the script itself caused. Also: a dropped iterator or loader releases its thread and executor
at once."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

from tests.helpers.tiny_clips import make_dataset

ROOT = Path(__file__).resolve().parents[1]
LOG_PREFIX = "loader log: "  # the child marks the loader's own log lines with it
EXECUTORS = ["reference", "dali-cpu"]
TIMEOUT = 240  # seconds: a hang fails the test instead of the suite

# The child: loader_from on VP9 and H.264 clips (on dali-cpu: both the decoder and the frames
# path, two pipelines), as a user writes it, with a deep prefetch so that its render thread is
# still at work when the script ends; MODE says how the script ends.
SCRIPT = textwrap.dedent("""
    import logging, sys
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("{prefix}%(message)s"))
    logging.getLogger("tsn_dali").addHandler(handler)
    from tsn_dali.data import loader_from

    videos, executor, mode, cache = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
    pairs = [(path, i % 2) for i, path in enumerate(videos)]
    L = loader_from(pairs, executor=executor, batch_size=2, num_segments=2, input_size=32, short_side=40,
                    index_cache=cache, device="cpu", prefetch=8)
    if mode == "one":
        batch = next(iter(L))
    elif mode == "live":
        it = iter(L)
        batch = next(it)
    elif mode == "raise":
        it = iter(L)
        batch = next(it)
        raise RuntimeError("the script's own error")
    elif mode == "interrupt":
        it = iter(L)
        batch = next(it)
        print("ready", flush=True)
        while True:
            for batch in L:
                pass
""").replace("{prefix}", LOG_PREFIX)

PLAIN_INTERRUPTED = 'import time\nprint("ready", flush=True)\nwhile True:\n    time.sleep(0.05)\n'


def unexpected_stderr(stderr: str, raised: Optional[str] = None) -> List[str]:
    """The lines of ``stderr`` the script did not cause: all but the loader's log lines and,
    where the script ended on an exception, exactly one traceback whose last line is
    ``raised`` (a header, indented frame lines, the exception)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(LOG_PREFIX)]
    if raised is None:
        return lines
    if not lines or lines[0] != "Traceback (most recent call last):" or lines[-1] != raised:
        return lines
    return [line for line in lines[1:-1] if not line.startswith("  ")]


def test_unexpected_stderr_sees_the_abort_and_a_second_traceback():
    """The check can fail: DALI's exit assertion and the abort are found, after a clean end and
    after the script's own traceback; the loader's lines and the script's traceback are not."""
    abort = ("Exception ignored in atexit callback: <function _shutdown_pipelines at 0x7f>\n"
             "Traceback (most recent call last):\n  File \"pipeline.py\", line 2050, in _shutdown_pipelines\n"
             "    assert len(Pipeline._pipes) == 0\nAssertionError: \n"
             "terminate called without an active exception\n")
    own = "Traceback (most recent call last):\n  File \"x.py\", line 3, in <module>\nRuntimeError: boom\n"
    log = f"{LOG_PREFIX}dali-cpu: 2 of 4 video(s) take the frames path\n"
    assert unexpected_stderr(log) == [] and unexpected_stderr(log + own, "RuntimeError: boom") == []
    assert "terminate called without an active exception" in unexpected_stderr(log + abort)
    assert unexpected_stderr(log + own + abort, "RuntimeError: boom") != []
    assert unexpected_stderr(log + abort + own, "RuntimeError: boom") != []
    assert unexpected_stderr(log + own, "KeyboardInterrupt") != []


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> List[str]:
    root = tmp_path_factory.mktemp("exit")
    paths = []
    for codec in ("vp9", "h264"):
        make_dataset(root / codec, 12, num_frames=16, width=64, height=48, num_classes=2, codec=codec)
        paths += sorted(str(p) for p in (root / codec / "videos").iterdir())
    return [paths[i // 2 + (i % 2) * 12] for i in range(24)]  # vp9 and h264 in turn: both paths in a batch


def child_args(videos, executor: str, mode: str, tmp_path: Path) -> List[str]:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    return [sys.executable, str(script), ",".join(videos), executor, mode, str(tmp_path / "index")]


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def run_child(args) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, env=child_env(), cwd=ROOT)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("mode", ["one", "live"])
def test_a_script_that_takes_one_batch_and_ends_exits_0(videos, executor, mode, tmp_path):
    pytest.importorskip("nvidia.dali")
    run = run_child(child_args(videos, executor, mode, tmp_path))
    assert run.returncode == 0, run.stderr
    assert unexpected_stderr(run.stderr) == [], run.stderr


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_uncaught_exception_with_a_live_iterator_exits_1_with_its_traceback(videos, executor, tmp_path):
    pytest.importorskip("nvidia.dali")
    run = run_child(child_args(videos, executor, "raise", tmp_path))
    assert run.returncode == 1, run.stderr
    assert unexpected_stderr(run.stderr, "RuntimeError: the script's own error") == [], run.stderr


def interrupted(args, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``args`` in a process group of its own, and once it prints "ready" send SIGINT to the
    group, as Ctrl-C in a terminal does; its status and output (killed and failed on a hang)."""
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                             cwd=cwd, start_new_session=True)
    out: List[str] = []
    err: List[str] = []
    readers = [threading.Thread(target=lambda s=stream, into=into: into.extend(s), daemon=True)
               for stream, into in ((child.stdout, out), (child.stderr, err))]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while "ready\n" not in out:
            if child.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the child ended or hung before it was ready ({child.poll()}): {''.join(err)}")
            time.sleep(0.05)
        time.sleep(0.5)  # iterating by now
        os.killpg(child.pid, signal.SIGINT)
        child.wait(timeout=TIMEOUT)
        for reader in readers:
            reader.join(TIMEOUT)
        return subprocess.CompletedProcess(args, child.returncode, "".join(out), "".join(err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not end within {TIMEOUT} s of SIGINT (a hang): {''.join(err)}")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


@pytest.fixture(scope="module")
def plain_interrupted(tmp_path_factory) -> subprocess.CompletedProcess:
    """What Python itself gives a script stopped by Ctrl-C (status and last stderr line)."""
    script = tmp_path_factory.mktemp("plain") / "plain.py"
    script.write_text(PLAIN_INTERRUPTED)
    return interrupted([sys.executable, str(script)], script.parent)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ctrl_c_while_iterating_exits_as_python_does(videos, executor, tmp_path, plain_interrupted):
    pytest.importorskip("nvidia.dali")
    assert plain_interrupted.stderr.strip().splitlines()[-1] == "KeyboardInterrupt"
    run = interrupted(child_args(videos, executor, "interrupt", tmp_path), ROOT)
    assert run.returncode == plain_interrupted.returncode, run.stderr
    assert unexpected_stderr(run.stderr, "KeyboardInterrupt") == [], run.stderr


# --------------------------------------------------------------------------- in this process


def prefetch_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "tsn_dali-prefetch" and t.is_alive()]


def test_a_dropped_iterator_stops_its_thread_and_a_dropped_loader_closes_its_executor(videos, tmp_path):
    pytest.importorskip("nvidia.dali")
    from tsn_dali.data import loader_from
    from tsn_dali.data.render import lifetime

    loader = loader_from([(p, i % 2) for i, p in enumerate(videos)], executor="dali-cpu", batch_size=2,
                         num_segments=2, input_size=32, short_side=40, index_cache=str(tmp_path / "index"),
                         device="cpu")
    before = len(prefetch_threads())
    it = iter(loader)
    next(it)
    assert len(prefetch_threads()) == before + 1
    del it
    assert len(prefetch_threads()) == before
    executor = loader.executor
    closes = []
    real_close = executor.close
    executor.close = lambda: (closes.append(1), real_close())
    assert loader in lifetime.live_loaders()
    del loader  # no reference cycle: released here, in this thread, not by a later collection
    assert closes == [1]
    gc.collect()
    assert executor._pipelines == {}


def test_the_exit_hook_closes_live_loaders_and_runs_before_dalis(videos, tmp_path):
    """Where the hook sits among the exit hooks is Python's business (last registered runs
    first); here: what it does, and that DALI's module was imported before it registered."""
    pytest.importorskip("nvidia.dali")
    from tsn_dali.data import loader_from
    from tsn_dali.data.render import lifetime

    loader = loader_from([(p, i % 2) for i, p in enumerate(videos)], executor="dali-cpu", batch_size=2,
                         num_segments=2, input_size=32, short_side=40, index_cache=str(tmp_path / "index"),
                         device="cpu")
    assert "nvidia.dali.pipeline" in sys.modules
    it = iter(loader)
    next(it)
    assert prefetch_threads()
    lifetime.close_live_loaders()
    assert prefetch_threads() == [] and loader.executor._pipelines == {}
    with pytest.raises(StopIteration):
        next(it)
    loader.close()

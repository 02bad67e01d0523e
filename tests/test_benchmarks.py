"""The benchmarks measure what they say: every variant they can build answers 200."""

from __future__ import annotations

import json

import httpx
import pytest

from benchmarks._apps import build, names

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn's, where they run
@pytest.mark.parametrize("variant", names())
async def test_every_benchmark_variant_answers(variant: str, anyio_backend: str) -> None:
    transport = httpx.ASGITransport(app=build(variant))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        response = await client.get("/")
    assert (response.status_code, response.json()) == (200, {"ok": True})


def test_the_websocket_benchmark_measures_both_backends(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import websocket

    websocket.main(["--messages", "50", "--closes", "3"])

    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| asyncio", "| trio"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_instructions_benchmark_runs_every_variant_it_can_build(
    anyio_backend: str,
) -> None:
    # The measuring process's work, without valgrind (which would take minutes).
    from benchmarks import instructions

    measured = await instructions._run(["plain", "cancel_ctx", "no-such-variant"], requests=3)

    assert measured == ["plain", "cancel_ctx"]


def test_the_instructions_benchmark_says_when_valgrind_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import instructions

    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("sys.argv", ["instructions.py", "--variants", "plain"])
    with pytest.raises(SystemExit, match="valgrind is not on PATH"):
        instructions.main()


def test_the_measuring_process_answers_with_its_figures() -> None:
    from benchmarks import memory
    from benchmarks._child import run_child

    args = ["--requests", "10", "--rounds", "2", "--variants", "plain", "cancel_ctx"]
    results = json.loads(run_child(memory.__file__, args))

    assert list(results) == ["plain", "cancel_ctx"]
    assert all(len(figures) == 3 for figures in results.values())  # 2 rounds, then tasks
    assert results["cancel_ctx"][-1] == 1.0  # one watcher per held request


def test_a_failing_measuring_process_ends_the_run_with_its_error() -> None:
    from benchmarks import memory
    from benchmarks._child import run_child

    with pytest.raises(SystemExit, match="unknown variant 'nope'"):
        run_child(memory.__file__, ["--requests", "1", "--rounds", "1", "--variants", "nope"])


@pytest.mark.parametrize(
    ("label", "plain"),
    [
        ("cancel_ctx", "plain"),
        ("@cancellable", "plain"),
        ("@cancellable+await", "plain+await"),  # a name that starts with "@" too
        ("@cancellable+await@v010", "plain+await"),
        ("CancellableRoute@v010", "plain"),
        ("plain+await", "plain+await"),
    ],
)
def test_each_throughput_ratio_is_against_the_plain_route_of_its_kind(
    label: str, plain: str
) -> None:
    from benchmarks.overhead import plain_of

    assert plain_of(label) == plain

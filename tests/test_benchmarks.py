"""The benchmarks measure what they say: every variant they can build answers 200."""

from __future__ import annotations

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

"""The ``fastapi_hangup`` pytest plugin: an httpx client that can hang up on your app.

Registered through the package's ``pytest11`` entry point. Loading it imports nothing but
pytest (httpx and the test kit are imported when a test asks for a fixture), and it adds no
hooks that act on tests which do not use its fixtures. The fixtures:

- ``hangup_app``: the app under test; by default imported from the ``hangup_app`` ini option
  (``"package.module:app"``), or override the fixture in your test module or conftest.
- ``hangup_transport``: the [`HangUpTransport`][fastapi_hangup.testing.HangUpTransport] for it;
  ``@pytest.mark.hangup(disconnect="repeat", lifespan=False, ...)`` passes its arguments.
- ``hangup_client``: an entered ``httpx.AsyncClient`` on that transport (``base_url``
  ``http://testserver``), with the app's lifespan running.

Async fixtures run through anyio's pytest plugin, so a test that takes ``hangup_client``
runs on every backend of ``anyio_backend`` (anyio's default: asyncio and, if installed,
trio); override ``anyio_backend`` to pin one.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from fastapi_hangup.testing import HangUpTransport

_NO_APP = (
    'the hangup_client fixture needs your app: set `hangup_app = "package.module:app"` '
    "under [tool.pytest.ini_options], or define a `hangup_app` fixture that returns it."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("hangup_app", "import path of the app for hangup_client (module:attribute)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "hangup(**kwargs): arguments for the HangUpTransport of the hangup_client fixture",
    )


@pytest.fixture
def hangup_app(request: pytest.FixtureRequest) -> Any:
    """The ASGI app under test, from the ``hangup_app`` ini option."""
    spec = str(request.config.getini("hangup_app") or "")
    if not spec:
        pytest.fail(_NO_APP, pytrace=False)
    module_name, _, attribute = spec.partition(":")
    app: Any = importlib.import_module(module_name)
    for name in (attribute or "app").split("."):
        app = getattr(app, name)
    return app


@pytest.fixture
def hangup_transport(hangup_app: Any, request: pytest.FixtureRequest) -> HangUpTransport:
    """The app's [`HangUpTransport`][fastapi_hangup.testing.HangUpTransport].

    ``hangup_client`` enters it.
    """
    from fastapi_hangup.testing import HangUpTransport

    marker = request.node.get_closest_marker("hangup")
    return HangUpTransport(hangup_app, **(marker.kwargs if marker else {}))


@pytest.fixture
async def hangup_client(
    hangup_transport: HangUpTransport, anyio_backend: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on ``hangup_transport``, open (the lifespan has started)."""
    import httpx

    async with httpx.AsyncClient(
        transport=hangup_transport, base_url="http://testserver"
    ) as client:
        yield client

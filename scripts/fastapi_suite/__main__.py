"""``python -m scripts.fastapi_suite``: the driver's entry point (see ``run``)."""

from scripts.fastapi_suite.run import main

raise SystemExit(main())

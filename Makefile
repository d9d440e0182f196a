# mudgate: `make run` serves on http://127.0.0.1:54731 (and telnet on 54732), `make test` runs
# the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run example test test-quick lint format bench readme install system-deps node-peers clean

# A fresh Debian machine has python3 without venv/ensurepip: install it when we can (root).
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "mudgate needs Python 3.11+; set PYTHON=python3.11 (or newer)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
		else echo "python3 -m venv failed: install your distribution's python3-venv package"; exit 1; fi; }
	$(BIN)/python -m pip install -q --upgrade pip

# What serving needs (make run), and what developing needs on top (tests, lint, benchmarks).
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[redis]'
	@touch $@

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test,redis,bench,soak]'
	@touch $@ $(RUN_STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/mudgate serve --telnet-port 54732

# The example game (examples/castle) in a process of its own, restarted whenever a file of it
# is saved (players stay connected): play at http://127.0.0.1:54731/play or telnet 127.0.0.1 54732
example: $(RUN_STAMP)
	MUDGATE_TELNET_RENDERERS=examples.castle.render:renderers \
		$(BIN)/mudgate serve --game examples.castle.game:game --reload --telnet-port 54732

# Debian packages the tests drive: Chromium (dashboard and play-page tests), promtool
# (the Prometheus rules), redis-server (the Redis backplane; each test starts its own),
# iproute2's ss (the kernel buffers of the hostile-client tests) and TinTin++'s tt++ (a real
# MUD client for the telnet tests; Debian puts it in /usr/games, which root's PATH lacks).
# Installed when missing and we are root; the tests fail, with a message saying so, when
# they are missing.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; \
		[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
		command -v promtool >/dev/null || missing="$$missing prometheus"; \
		command -v redis-server >/dev/null || missing="$$missing redis-server"; \
		command -v ss >/dev/null || missing="$$missing iproute2"; \
		command -v tt++ >/dev/null || [ -x /usr/games/tt++ ] || missing="$$missing tintin++"; \
		if [ -n "$$missing" ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	fi

test: install system-deps node-peers
	$(BIN)/pytest --cov --cov-report=term --durations=20

test-quick: install
	$(BIN)/pytest -m "not slow" -x -q

lint: install
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy src

format: install
	$(BIN)/ruff format src tests examples
	$(BIN)/ruff check --fix src tests examples

# Regenerate the README's configuration table from the Settings class.
readme: install
	$(BIN)/python -c 'import pathlib, re; from mudgate.settings import settings_table; \
		p = pathlib.Path("README.md"); \
		p.write_text(re.sub(r"(<!-- settings-table:start.*?-->\n).*?(\n<!-- settings-table:end -->)", \
			lambda m: m.group(1) + settings_table() + m.group(2), p.read_text(), flags=re.S))'

# The Node.js peers of the broadcast benchmark: Debian's nodejs and npm (installed as root when
# missing), and ws and Socket.IO from npm into bench/peers/node/node_modules (not committed).
# Checked on every run by asking node itself to resolve both packages (a marker file can outlive
# the folder it vouches for); `npm ci` runs only when they do not resolve or the lock is newer.
NODE_DIR := bench/peers/node
NODE_RESOLVES := node -e 'require.resolve("ws"); require.resolve("socket.io")'
node-peers:
	@if ! command -v npm >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages: nodejs npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
	fi
	@command -v npm >/dev/null || { echo "the Node.js peers need node and npm (Debian: apt-get install nodejs npm)"; exit 1; }
	@cd $(NODE_DIR) && if ! $(NODE_RESOLVES) 2>/dev/null \
			|| [ package-lock.json -nt node_modules/.package-lock.json ]; then \
		echo "installing the Node.js peers into $(NODE_DIR)/node_modules"; \
		npm ci --no-audit --no-fund && $(NODE_RESOLVES) \
			|| { echo "npm ci did not install ws and socket.io in $(NODE_DIR)"; exit 1; }; \
	fi

# Benchmarks write JSON to bench/results/ and the table to BENCHMARKS.md (about 17 minutes on
# a shared 2-core machine, the two game ones about 80 s and 40 s of it; the cross-node one
# needs redis-server, which system-deps installs).
bench: install system-deps node-peers
	$(BIN)/python bench/idle_memory.py
	$(BIN)/python bench/broadcast.py --messages 300
	$(BIN)/python bench/cluster_broadcast.py --players 1000 --messages 300
	$(BIN)/python bench/stalled.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/churn.py
	$(BIN)/python bench/monitoring_overhead.py
	$(BIN)/python bench/cleanup_cost.py
	$(BIN)/python bench/tracemalloc_overhead.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/game_split.py
	$(BIN)/python bench/game_restart.py
	$(BIN)/python bench/reconnect_spread.py
	$(BIN)/python bench/telnet_idle.py
	$(BIN)/python bench/telnet_delivery.py
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build src/*.egg-info

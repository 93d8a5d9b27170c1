# fastpath: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYS_STAMP := .sysdeps.installed
BPF_OBJS := $(patsubst bpf/%.bpf.c,bpf/build/%.bpf.o,$(wildcard bpf/*.bpf.c))
# Debian packages: the BPF toolchain, and the peers the benchmarks compare with.
APT_TEST := clang llvm libbpf-dev bpftool iproute2 openssl nginx-light haproxy
APT_BENCH := nginx-light haproxy

.PHONY: setup demo up test test-pure bench bench-quick bench-hedge bench-workers bench-ab bench-control soak fuzz bpf proto clean sysdeps bench-sysdeps wheel

setup: $(STAMP) sysdeps bpf compiled

# The hot modules compiled with mypyc (same source) when a C compiler is present; the
# pure-Python package works without them (FASTPATH_PURE=1 forces it).
HOT_SRC := $(wildcard src/fastpath/h2/*.py) $(addprefix src/fastpath/dataplane/,call.py services.py conn.py downstream.py upstream.py) \
	src/fastpath/dataplane/outcome.py src/fastpath/_build.py tools/build_compiled.py \
	$(addprefix src/fastpath/router/,axes.py live.py load.py prefix.py router.py)
COMPILED_STAMP := src/fastpath/.compiled
HAVE_CC := $(shell command -v cc >/dev/null 2>&1 && echo 1)

compiled: $(if $(HAVE_CC),$(COMPILED_STAMP))

$(COMPILED_STAMP): $(STAMP) $(HOT_SRC)
	@rm -f $@
	$(PY) -m pip install -q -e '.[compiled]'
	@if $(PY) tools/build_compiled.py >src/build.log 2>&1; then touch $@; else \
	  echo "note: mypyc build failed (src/build.log); fastpath runs as pure Python"; \
	  find src/fastpath -name '*.so' -delete; fi

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml setup.py
	$(PY) -m pip install -q -e '.[test,bench,fuzz]'
	touch $@

# As root, install what is missing; as a user, say what to install.
sysdeps:
	@missing=$$(for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $$missing"; apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	  else echo "note: BPF offload needs: sudo apt-get install $$missing"; fi; \
	fi

bench-sysdeps:
	@missing=$$(for p in $(APT_BENCH); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $$missing"; apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	  else echo "note: the benchmark peers need: sudo apt-get install $$missing"; fi; \
	fi

bpf: sysdeps
	@if [ -n "$(BPF_OBJS)" ] && command -v clang >/dev/null; then $(MAKE) -s -C bpf; fi

demo: setup
	$(VENV)/bin/fastpath demo

up: setup
	$(VENV)/bin/fastpath up

test: setup
	FASTPATH_EXPECT_COMPILED=$$(test -f $(COMPILED_STAMP) && echo 1) $(PY) -m pytest -q tests

# The same suite on the pure-Python build.
test-pure: setup
	FASTPATH_PURE=1 $(PY) -m pytest -q tests

bench: setup bench-sysdeps
	$(VENV)/bin/fastpath bench
	$(PY) -m fastpath.bench.workers_bench

# TTFT hedging on the simulated fleet: one site intermittently slow to start, with and without (plot in bench/results/hedge).
bench-hedge: setup
	$(PY) -m fastpath.bench.hedge_scenario --plot bench/results/hedge

# Paired A/B: this checkout against BASE (a git ref, built in a scratch worktree), both proxies on one
# backend with calls alternated, so machine noise lands on both: CPU per call and p50, ratio B/A per round.
# ARGS passes options to fastpath.bench.paired, e.g. make bench-ab BASE=HEAD~1 ARGS="--kind stream --unique".
bench-ab: setup compiled
	tools/bench_ab.sh $(or $(BASE),HEAD) $(ARGS)

# Streamed messages/s at c=64 through 1 and 2 proxy workers (SO_REUSEPORT), with the ratio.
bench-workers: setup
	$(PY) -m fastpath.bench.workers_bench

# The wheel users install, in dist/: BPF objects (with clang) and the mypyc-compiled hot modules (with a C
# compiler; FASTPATH_COMPILE=0 builds it pure) compiled into it.
wheel: $(PY)
	$(PY) -m pip wheel --no-deps -w dist .

bench-quick: setup bench-sysdeps
	$(VENV)/bin/fastpath bench --quick

# Control plane: push latency to subscribed proxies, and the cost of a metrics scrape.
bench-control: setup
	$(PY) -m fastpath.bench.push_latency
	$(PY) -m fastpath.bench.scrape_cost

# Minutes of mixed traffic with cancels and a site killed: every call accounted for, RSS and fds flat.
soak: setup
	$(PY) -m fastpath.bench.soak --controller

# Coverage-guided fuzzing (atheris) of every parser, FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: setup
	$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

proto: $(STAMP)
	PYTHON=$(PY) proto/generate.sh

clean:
	rm -rf $(VENV) bpf/build .pytest_cache src/build build $(COMPILED_STAMP) src/fastpath/_compiled.json
	find src/fastpath -name '*.so' -delete

# Noise Workbench. `make serve`: set up and start the dashboard. `make test`: set up and run the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch where there is no GPU (pip takes the wheel on this disk); override for another build.
TORCH  ?= torch==2.13.0
PORT   ?= 5006
# three test processes (pytest-xdist), a module each at a time: its module-scoped fixtures (a served dashboard, a
# cluster) are built once; one torch thread per process (tests/conftest.py). Three on two cores, because much of the
# suite waits on browsers, kernels and servers: two kept the CPUs 75 % busy (14:25), three 81-83 % (12:06-14:15)
PYTEST_ARGS ?= -n 3 --dist loadscope

.PHONY: setup serve test test-all bench browser kernel reproduce clean gpu-wheels
PROFILE ?= full
JOBS ?= 1

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all,test]"
	$(BIN)/python -m ipykernel install --user --name workbench --display-name "Python (workbench)" >/dev/null
	touch $@

kernel: setup
	$(BIN)/python -m ipykernel install --user --name workbench --display-name "Python (workbench)"

# The dashboard on http://localhost:$(PORT), bound to localhost; results in data/ (local files + SQLite catalog).
serve: setup
	$(BIN)/workbench serve --port $(PORT)

# Chromium for the dashboard's browser tests (Debian's package; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The test suite (fast profile: reproduction checks at small settings, the app in headless Chromium).
test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything, the long reproduction runs included.
test-all: setup browser
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# The pure-Python packages a GPU machine's image lacks, as wheels for bench/gpu_session.sh (carried as .whl/), at
# the versions setup installed here.
GPU_WHEELS = h5netcdf param platformdirs
gpu-wheels: setup
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux2014_x86_64 -d .whl $$($(BIN)/python -c 'import sys; from importlib.metadata import \
	    version; print(*(f"{p}=={version(p)}" for p in sys.argv[1:]))' $(GPU_WHEELS))

bench: setup browser
	$(BIN)/python bench/bench_ensemble.py
	$(BIN)/python bench/bench_precision.py
	$(BIN)/python bench/bench_hessian.py
	$(BIN)/python bench/bench_diffusion.py
	$(BIN)/python bench/bench_mdm_sampler.py
	$(BIN)/python bench/bench_sampling_sweep.py
	$(BIN)/python bench/bench_load.py

reproduce: kernel
	$(BIN)/workbench reproduce --profile $(PROFILE) --jobs $(JOBS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# The two commands of the README: `make run` (set up and run the platform) and `make test` (the whole suite).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test deps system-packages bench

run: deps system-packages
	$(PY) -m fashionsite.launcher run

test: deps system-packages
	$(PY) -m fashionsite.launcher test $(PYTEST_ARGS)

# Pillow's bilinear resize, the same pixels for about half the CPU (ml/resample.py); without a C compiler the
# platform resizes with Pillow itself, so a failed build only warns.
NATIVE_RESAMPLE := ml/native/libresample.so

deps: $(STAMP) $(NATIVE_RESAMPLE)

$(NATIVE_RESAMPLE): ml/native/resample.c
	$(CC) -O3 -Wall -fPIC -shared -pthread -o $@ $< -lm || echo "warning: $@ not built; images are resized by Pillow (the same pixels, slower)"

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Debian packages the services and browser tests need, installed only when missing.
system-packages:
	@command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

bench: deps system-packages
	$(PY) bench/embedding_throughput.py

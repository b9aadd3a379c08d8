PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# pyiqa pulls in opencv-python beside opencv-python-headless and they share cv2/:
# reinstalling the headless build last keeps a cv2 that imports without libGL.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --force-reinstall --no-deps opencv-python-headless
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tir-agent demo --out demo-output

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/pool_throughput.py
	$(BIN)/python benchmarks/toolbox.py
	$(BIN)/python benchmarks/mcp_overhead.py
	$(BIN)/python benchmarks/agents.py
	$(BIN)/python benchmarks/detector.py
	$(BIN)/python -m tiragent.agent.tiny /tmp/tir-agent-tiny-qwen
	$(BIN)/python benchmarks/agents.py --policy /tmp/tir-agent-tiny-qwen --name agents_tiny
	$(BIN)/python benchmarks/agents.py --pairs ../shared/data/real/PolyU_noise --bench /tmp/tir-agent-polyu --name agents_polyu

clean:
	rm -rf $(VENV) demo-output

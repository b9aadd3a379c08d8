PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench weights weights-randomized detector policy clean

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

# ruff, then the tests (tests/test_layers.py checks the import layering with import-linter).
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/pip install -q --force-reinstall --no-deps opencv-python-headless
	$(BIN)/python benchmarks/pool_throughput.py
	$(BIN)/python benchmarks/toolbox.py
	$(BIN)/python benchmarks/toolbox.py --degradations independent --name tools_independent
	$(BIN)/python benchmarks/rollout_throughput.py --repeats 4
	$(BIN)/python benchmarks/mcp_overhead.py
	$(BIN)/python benchmarks/device_sharing.py
	$(BIN)/python benchmarks/agents.py
	$(BIN)/python benchmarks/detector.py
	$(BIN)/python -m tiragent.agent.tiny /tmp/tir-agent-tiny-qwen
	$(BIN)/python benchmarks/agents.py --policy /tmp/tir-agent-tiny-qwen --name agents_tiny
	$(BIN)/python benchmarks/agents.py --pairs ../shared/data/real/PolyU_noise --bench /tmp/tir-agent-polyu --name agents_polyu
	$(BIN)/python benchmarks/agents.py --clean ../shared/data/clean/McMaster --bench /tmp/tir-agent-mcmaster --degradations independent \
		--per-combo 3 --policy tir --policy fixed --policy exhaustive --policy oracle --policy random --name agents_mcmaster_rerun

# Retrains the shipped learned tools (server/weights/) on CBSD68 with the step counts their
# cards record (read_info(path).card["schedule"]: one command per entry, the later ones with
# --resume), evaluating on McMaster; hours on a 2-core CPU. The runs with --device cuda need a
# GPU (the card records the one it ran on: an H200 for dejpeg). dejpeg's first stage ran at
# commit feb4d45, when its recipe jittered colours without mixing them; the CPU fine-tune
# after it trains with the mixing.
DATA := ../shared/data/clean
TRAIN := $(BIN)/tir-agent tools train --data $(DATA)/CBSD68 --eval-data $(DATA)/McMaster --out runs/tools
weights: install
	$(TRAIN) --task dejpeg --device cuda --batch-size 64 --workers 3 --steps 5275 --weights server/weights/dejpeg_unet.safetensors
	$(TRAIN) --task dejpeg --init server/weights/dejpeg_unet.safetensors --steps 8442 --lr 5e-4 --weights server/weights/dejpeg_unet.safetensors
	$(TRAIN) --task sr --recipe srnet_x4 --steps 8782 --weights server/weights/sr_srnet_x4.safetensors
	$(TRAIN) --task defocus_deblur --steps 4193 --weights server/weights/defocus_deblur_unet.safetensors
	$(TRAIN) --task motion_deblur --steps 4399 --weights server/weights/motion_deblur_unet.safetensors
	$(TRAIN) --task motion_deblur --steps 8000 --resume --weights server/weights/motion_deblur_unet.safetensors
	$(TRAIN) --task motion_deblur --recipe kernel_wiener --steps 6000 --weights server/weights/motion_deblur_kernel_wiener.safetensors
	$(TRAIN) --task denoise --steps 5265 --weights server/weights/denoise_unet.safetensors
	$(TRAIN) --task denoise --steps 12000 --resume --weights server/weights/denoise_unet.safetensors
	$(TRAIN) --task denoise --steps 20000 --resume --weights server/weights/denoise_unet.safetensors
	$(TRAIN) --task derain --steps 2813 --weights server/weights/derain_unet.safetensors
	$(TRAIN) --task dehaze --steps 3005 --weights server/weights/dehaze_unet.safetensors
	$(TRAIN) --task dehaze --recipe hazenet --steps 3500 --weights server/weights/dehaze_hazenet.safetensors
	$(TRAIN) --task lowlight --steps 2926 --weights server/weights/lowlight_unet.safetensors
	$(TRAIN) --task sr --recipe srnet_x2 --steps 2584 --weights server/weights/sr_srnet_x2.safetensors

clean:
	rm -rf $(VENV) demo-output

# Fine-tunes the shipped learned tools on the randomized degradation model (eval/randomized.py) and the 511 training
# photos (CBSD432 + CSun_Hays80_half), into runs/tools-randomized/weights/ (not yet shipped: issue 13). Resumable:
# rerun it after an interruption. Hours on a 2-core CPU: nohup make weights-randomized > runs/retrain.log 2>&1 &
weights-randomized: install
	sh train/retrain_randomized.sh

# The shipped learned degradation detector (server/weights/detector_net.safetensors), from the recipe in its card:
# 8,000 renders of the 511 training photos, 2,500 steps, a quarter of the camera-native photos dim scenes (--dim_share 0.25:
# exposure 0.15-0.7 with camera noise, labelled noise, not low light) and half of them close-ups of parallel edges
# (--oriented_share 0.5: the most oriented of 4 windows, not motion blur); about 30 minutes on a 2-core CPU.
# Resumable (--resume). The detectors before it (runs/detector-or: half dim scenes; runs/detector-dim2: no oriented close-ups; runs/detector-v2: no dim
# scenes either) and the variants tried are compared in docs/benchmarks/detector_oriented.md and detector_dim.md.
detector: install
	$(BIN)/tir-agent train detector --data ../shared/data/clean/CBSD432 ../shared/data/clean/CSun_Hays80_half \
		--out runs/detector-or3 --samples 8000 --val_samples 800 --steps 2500 --batch 64 --dim_share 0.25 --oriented_share 0.5 --resume
	cp runs/detector-or3/detector_net.safetensors server/weights/detector_net.safetensors

# The shipped policy (agent/weights/policy/) from its recipe (train/policy_recipe.sh; the card in agent/weights/policy/card.md
# records data size, steps, learning rates, minutes and machine). About two hours on a 2-core CPU; resumable (rerun it).
policy: install
	sh train/policy_recipe.sh

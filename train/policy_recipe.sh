#!/bin/sh
# The shipped policy (agent/weights/policy/), from scratch: a random Qwen3-VL, SFT data searched over MCP on the 511
# training photos (CBSD432 + CSun_Hays80_half, randomized degradations, 15% camera-native photos), SFT, GRPO, then the
# copy into the package with its card. Its perception is the learned detector's reading (--detector learned), which
# it keeps in its views; in training that reading is of a 320-px window around each crop (--perception_context), as
# the detector takes size as a cue and reads every small crop as low-resolution, which no test photo is. Run from the
# repository root (make policy). Every stage resumes: rerun after an interruption. About two hours on a 2-core CPU
# (less where an earlier policy's data, runs/policy2/sft-data or runs/policy/sft-data, is there: its searches are
# replayed, not searched again; the data is the same either way). With a GPU, see docs/policy.md.
set -e
cd "$(dirname "$0")/.." || exit 1
mkdir -p runs/train-photos
for f in ../shared/data/clean/CBSD432/* ../shared/data/clean/CSun_Hays80_half/*; do
  ln -sf "$(readlink -f "$f")" "runs/train-photos/$(basename "$(dirname "$f")")_$(basename "$f")"
done
B=.venv/bin
O=runs/policy3
REUSE=""
[ -f runs/policy/sft-data/card.json ] && REUSE="--reuse_search runs/policy/sft-data"
[ -f runs/policy2/sft-data/card.json ] && REUSE="--reuse_search runs/policy2/sft-data"
[ -f $O/init/config.json ] || $B/python -m tiragent.agent.tiny $O/init --hidden_size 128 --layers 4 --vision_depth 2 --seed 0
$B/tir-agent train gen-sft --clean runs/train-photos --out $O/sft-data --images "${POLICY_IMAGES:-505}" --crop 160 --workers 4 \
  --degradations randomized --camera_ratio 0.15 --short_prompt --perception --detector learned --perception_context 320 --search_metrics psnr \
  --whole_view 128 --crop_view 128 $REUSE
[ -f $O/sft/tir_agent_sft.json ] || $B/tir-agent train sft --data $O/sft-data --model $O/init --out $O/sft \
  --epochs "${POLICY_EPOCHS:-12}" --batch_size 8 --lr 5e-4 --warmup_ratio 0.05 --save_steps 200 --resume
[ -f $O/rl/tir_agent_rl.json ] || $B/tir-agent train rl --init $O/sft --clean runs/train-photos --out $O/rl --degradations randomized \
  --camera_ratio 0.15 --crop 176 --perception_context 320 --group 4 --batch 4 --steps "${POLICY_RL_STEPS:-50}" --lr 5e-6 --temperature 0.6 --max_turns 4 \
  --images 2000 --seed 1 --save_steps 10 --resume
$B/python -m tiragent.train.ship_policy --run $O/rl --out agent/weights/policy --decode rank --gate 0.5 --prior 1 --models default

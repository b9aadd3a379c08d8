#!/bin/sh
# Fine-tunes the shipped learned tools on the randomized degradation model (eval/randomized.py), on the 511
# training photos (CBSD432 + CSun_Hays80_half, symlinked into runs/train-photos), evaluating on McMaster.
# Resumable: rerun this script; each finished tool is skipped, a running one continues from its checkpoint.
# Run from the repository root (make weights-randomized); hours on a 2-core CPU, so run it with nohup.
cd "$(dirname "$0")/.." || exit 1
mkdir -p runs/train-photos
for f in ../shared/data/clean/CBSD432/* ../shared/data/clean/CSun_Hays80_half/*; do
  ln -sf "$(readlink -f "$f")" "runs/train-photos/$(basename "$(dirname "$f")")_$(basename "$f")"
done
T=".venv/bin/tir-agent tools train --data runs/train-photos --eval_data ../shared/data/clean/McMaster --out runs/tools-randomized --degradations randomized"
W=server/weights
O=runs/tools-randomized/weights
mkdir -p "$O"
run() {  # task recipe weights-file minutes
  [ -f "$O/$3" ] && return
  if [ -d "runs/tools-randomized/$1.$2" ]; then resume="--resume"; else resume=""; fi
  $T --task "$1" --recipe "$2" --init "$W/$3" --minutes "$4" --lr 3e-4 --weights "$O/$3" $resume
}
run motion_deblur unet motion_deblur_unet.safetensors 20
run sr srnet_x4 sr_srnet_x4.safetensors 20
run derain unet derain_unet.safetensors 20
run denoise unet denoise_unet.safetensors 20
run defocus_deblur unet defocus_deblur_unet.safetensors 20
run dejpeg unet dejpeg_unet.safetensors 20
run lowlight unet lowlight_unet.safetensors 20
run dehaze hazenet dehaze_hazenet.safetensors 20
run sr srnet_x2 sr_srnet_x2.safetensors 15

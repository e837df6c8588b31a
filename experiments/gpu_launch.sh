#!/usr/bin/env bash
# Run a tokeff sweep on a GPU VM (one host; all its GPUs form the mesh). Several VMs can split
# one grid: give each SHARD=i/n and the same gs:// SWEEP_DIR (each writes its own table file,
# merged on read). Re-running resumes.
#
#   NAME=tokeff-h100 ZONE=us-central1-a MACHINE=a3-highgpu-1g GPU=nvidia-h100-80gb GPUS=1 \
#   REPO=https://github.com/you/tokeff CONFIG=configs/gpu_sweep_lagasse.py \
#   SWEEP_DIR=gs://your-bucket/sweeps/lagasse-gpu experiments/gpu_launch.sh
set -euo pipefail
: "${NAME:?}" "${ZONE:?}" "${REPO:?}" "${CONFIG:?}" "${SWEEP_DIR:?}"
MACHINE=${MACHINE:-a3-highgpu-1g}
GPU=${GPU:-nvidia-h100-80gb}
GPUS=${GPUS:-1}
SHARD=${SHARD:-0/1}
EXTRA=${EXTRA:-}
case "$GPU" in *h100*) DEVICE=h100 ;; *a100*) DEVICE=a100 ;; *l4*) DEVICE=l4 ;; *) DEVICE=h100 ;; esac
# MEASURED=SWEEP_DIR estimates with the MFU a sweep measured.
python3 experiments/estimate_cost.py --config "$CONFIG" --device "$DEVICE" --chips "$GPUS" \
  ${MEASURED:+--measured "$MEASURED"} $EXTRA

if ! gcloud compute instances describe "$NAME" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute instances create "$NAME" --zone "$ZONE" --machine-type "$MACHINE" \
    --accelerator "type=$GPU,count=$GPUS" --maintenance-policy TERMINATE \
    --image-family common-cu124-ubuntu-2204 --image-project deeplearning-platform-release \
    --boot-disk-size 200GB --metadata install-nvidia-driver=True ${SPOT:+--provisioning-model=SPOT}
fi
gcloud compute ssh "$NAME" --zone "$ZONE" --command "ACCEL=cuda REPO=$REPO bash -s" < experiments/setup_vm.sh
# The memory plan on the VM, before the sweep starts: each model's step compiled by the GPU's own
# compiler with its own attention path, against the GPU's own memory; the launch stops there, in
# one line, when a GPU cannot hold a model (MEMORY=0 skips it).
if [ "${MEMORY:-1}" = 1 ]; then
  gcloud compute ssh "$NAME" --zone "$ZONE" --command \
    "cd ~/tokeff && .venv/bin/python experiments/estimate_cost.py --config $CONFIG --device $DEVICE \
     --chips $GPUS --memory $EXTRA"
fi
gcloud compute ssh "$NAME" --zone "$ZONE" --command \
  "cd ~/tokeff && nohup .venv/bin/tokeff sweep --shard $SHARD --config $CONFIG --workdir $SWEEP_DIR $EXTRA \
   > sweep.log 2>&1 &"
echo "follow: gcloud compute ssh $NAME --zone $ZONE --command 'tail -f ~/tokeff/sweep.log'"

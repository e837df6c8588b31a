#!/usr/bin/env bash
# Run a tokeff sweep on a Cloud TPU VM: one host (v5litepod-8, v4-8) or a multi-host slice
# (v5litepod-32, v4-32, ...). Every host runs every point on the whole slice (tokeff sweep
# --distributed calls jax.distributed.initialize(), which finds the other hosts itself on TPU
# VMs); process 0 appends the rows. The sweep dir must be shared by all hosts: a gs:// bucket.
# Re-running this script resumes the sweep (finished points are skipped, interrupted ones
# resume from their orbax checkpoints) — so it is also the recovery from a preemption.
#
#   NAME=tokeff-v5e ZONE=us-west4-a TYPE=v5litepod-8 VERSION=v2-alpha-tpuv5-lite \
#   REPO=https://github.com/you/tokeff CONFIG=configs/tpu_sweep_lagasse.py \
#   SWEEP_DIR=gs://your-bucket/sweeps/lagasse experiments/tpu_launch.sh
#
# Add SPOT=1 for spot capacity; EXTRA="--config.grid.seeds=(0,)" to override config keys.
set -euo pipefail
: "${NAME:?}" "${ZONE:?}" "${TYPE:?}" "${REPO:?}" "${CONFIG:?}" "${SWEEP_DIR:?}"
VERSION=${VERSION:-tpu-ubuntu2204-base}
EXTRA=${EXTRA:-}

# 1. Cost before compute: expected FLOPs and chip-hours at an assumed MFU.
case "$TYPE" in v4*) DEVICE=v4 ;; v5p*) DEVICE=v5p ;; v6e*) DEVICE=v6e ;; *) DEVICE=v5e ;; esac
CHIPS=${TYPE##*-}
if [ "$DEVICE" = v4 ] || [ "$DEVICE" = v5p ]; then CHIPS=$((CHIPS / 2)); fi  # their names count cores
# MEASURED=SWEEP_DIR estimates with the MFU a sweep measured.
python3 experiments/estimate_cost.py --config "$CONFIG" --device "$DEVICE" --chips "$CHIPS" \
  ${MEASURED:+--measured "$MEASURED"} $EXTRA

# 2. The VM (skipped when it exists).
if ! gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE" \
    --version "$VERSION" ${SPOT:+--spot}
fi

# 3. Install on every host, then run the sweep on every host at once.
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all \
  --command "ACCEL=tpu REPO=$REPO bash -s" < experiments/setup_vm.sh
# The memory plan on the VM, before the sweep starts: each model's step compiled by the TPU's own
# compiler with its own attention path, against the chips' own memory; the launch stops there, in
# one line, when a chip cannot hold a model (MEMORY=0 skips it). A host sees only its own chips:
# slices of several hosts skip it (plan them from a CPU host with --chips, an upper bound).
HOST_CHIPS=$([ "$DEVICE" = v4 ] || [ "$DEVICE" = v5p ] && echo 4 || echo 8)
if [ "${MEMORY:-1}" = 1 ] && [ "$CHIPS" -le "$HOST_CHIPS" ]; then
  gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=0 --command \
    "cd ~/tokeff && .venv/bin/python experiments/estimate_cost.py --config $CONFIG --device $DEVICE \
     --chips $CHIPS --memory $EXTRA"
fi
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command \
  "cd ~/tokeff && nohup .venv/bin/tokeff sweep --distributed --config $CONFIG --workdir $SWEEP_DIR $EXTRA \
   > sweep.log 2>&1 &"
echo "running; follow it with:"
echo "  gcloud compute tpus tpu-vm ssh $NAME --zone $ZONE --worker=0 --command 'tail -f ~/tokeff/sweep.log'"
echo "results: gsutil cat $SWEEP_DIR/results.jsonl   (fit: tokeff fit $SWEEP_DIR/results.csv --form volume --out fit/)"

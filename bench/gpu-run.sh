#!/usr/bin/env bash
# Runs on the GPU machine (no Rust there): the CUDA build of mcugan, carried in as
# target-gpu/mcugan, trains the reference GAN and writes logs and results under $OUT.
#
#   bench/gpu-run.sh smoke        one epoch of each data set, and of dcgan.py (timing, libraries)
#   bench/gpu-run.sh verify       the kernel trainer's GPU test: CUDA kernels and cuBLAS
#                                 against the fused CPU trainer (needs mcugan-tests.xz)
#   bench/gpu-run.sh JOB[:EPOCHS]...   any of digits-reference, fashion-reference,
#                                      digits-small-data (candle's engine), digits-kernels,
#                                      fashion-kernels (the reference on the kernel engine),
#                                      digits-dcgan (dcgan.py, candle's conv2d on CUDA)
#                                      (200 epochs unless EPOCHS is given)
#
# What it expects (an ignored folder, carried with the working tree, 64 MiB at most):
# target-gpu/mcugan.xz (the release binary built with --features cuda, xz-compressed),
# target-gpu/mcugan-tests.xz (the host's unit tests, same build) and
# target-gpu/{mnist-digits,fashion-mnist}/*.gz (IDX files). `cargo xtask gpu-bundle` makes it.
#
# All jobs together stop after BUDGET_S seconds (default 560, under the device tool's 600 s a
# command): a job still training then gets SIGINT, saves its checkpoint like Ctrl-C, and the
# results archive is still written, so a slow job cannot lose the others' results.
set -uo pipefail
OUT=${OUT:-/tmp/mcugan-gpu}
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-560} ))
mkdir -p "$OUT"
BIN=/tmp/mcugan-cuda
python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open('target-gpu/mcugan.xz'), open('$BIN','wb'))"
chmod +x "$BIN"
DIGITS=target-gpu/mnist-digits
FASHION=target-gpu/fashion-mnist
SITE=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
LIBS=$(find "$SITE/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:-}"
{
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  ldd "$BIN"
  nproc
} > "$OUT/machine.txt" 2>&1

train() { # name data recipe epochs [extra...]
  local name=$1 data=$2 recipe=$3 epochs=$4; shift 4
  local left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -lt 15 ]; then echo "$name skipped: no time left" | tee -a "$OUT/jobs.txt"; return; fi
  local start=$(date +%s%N)
  timeout -s INT -k 20 "$left" "$BIN" train --device cuda --data "$data" --recipe "$recipe" --epochs "$epochs" \
    --out "$OUT/$name" --sample-interval 4000 --quiet "$@" > "$OUT/$name.log" 2>&1 &
  local pid=$!
  sleep 3
  # The shared libraries the process opened (cudarc loads CUDA's at run time).
  local trainer=$(pgrep -P "$pid" 2>/dev/null | head -1)
  grep -o '/[^ ]*\.so[^ ]*' "/proc/${trainer:-$pid}/maps" 2>/dev/null | sort -u > "$OUT/$name.libraries.txt"
  wait $pid
  local rc=$?
  echo "$name rc=$rc wall=$(( ($(date +%s%N) - start) / 1000000 )) ms" | tee -a "$OUT/jobs.txt"
  tail -2 "$OUT/$name.log"
  # Checkpoints stay behind (too large to bring back); the generator and logs come back.
  [ "${KEEP_CHECKPOINTS:-0}" = 1 ] || rm -f "$OUT/$name/checkpoint.safetensors"
}

for spec in "$@"; do
  job=${spec%%:*}
  epochs=200
  [ "$job" != "$spec" ] && epochs=${spec#*:}
  case $job in
    smoke)
      train smoke-digits $DIGITS reference 1
      train smoke-fashion $FASHION reference 1
      train smoke-dcgan $DIGITS reference 1 --arch dcgan ;;
    verify)
      python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('target-gpu/mcugan-tests.xz'), open('/tmp/mcugan-tests','wb'))"
      chmod +x /tmp/mcugan-tests
      left=$(( DEADLINE - $(date +%s) ))
      if [ "$left" -lt 15 ]; then echo "verify skipped: no time left" | tee -a "$OUT/jobs.txt"; continue; fi
      timeout -k 10 "$left" /tmp/mcugan-tests engine::kernels --include-ignored --test-threads 1 > "$OUT/verify.log" 2>&1
      echo "verify rc=$?" | tee -a "$OUT/jobs.txt"
      tail -15 "$OUT/verify.log" ;;
    digits-kernels) train digits-kernels $DIGITS reference $epochs --engine kernels ;;
    fashion-kernels) train fashion-kernels $FASHION reference $epochs --engine kernels ;;
    digits-reference) train digits-reference $DIGITS reference $epochs ;;
    digits-small-data) train digits-small-data $DIGITS small-data $epochs ;;
    digits-dcgan) train digits-dcgan $DIGITS reference $epochs --arch dcgan ;;
    fashion-reference) train fashion-reference $FASHION reference $epochs ;;
    *) echo "unknown job $job" >&2; exit 2 ;;
  esac
done
# One archive comes back (the device tool brings back a limited number of files).
tar czf /tmp/results.tar.gz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/results.tar.gz "$OUT/"
exit 0

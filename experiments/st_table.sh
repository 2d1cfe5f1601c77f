#!/usr/bin/env bash
# The symbol-tuning target table (the paper's label-type ablation), one market: every row runs alone, one after the
# other (2 cores: nothing else should run beside it), each into outputs/st_table/<market>/<row>/ (results.json with
# wall_time_s and peak_rss_mb, predictions.jsonl). `<row>_score` re-tests <row>'s checkpoint with exact scoring
# (no training). Finished rows are skipped, so the script resumes.
#   bash experiments/st_table.sh sg | sgd_small | id   [extra Hydra overrides for every row]
# ONLY="compressed curated" runs just those rows. Then:
#   python experiments/compare.py outputs/st_table --rows target,label_choice,cross_lingual,decode \
#       --metric test/acc --metric test/unmatched --out experiments/reports/st_table --readme README.md st_table
set -uo pipefail
market=${1:?market}; shift
extra=("$@")
root=outputs/st_table/$market; mkdir -p "$root"
case $market in
  sg) base="+experiment=st_sg" ;;
  id) base="+experiment=st_id" ;;
  sgd_small) base="+experiment=st market=sgd_small data.max_train_examples=1500 data.max_eval_examples=150" ;;
  *) base="+experiment=st market=$market" ;;
esac
if [ "$market" = id ]; then  # cross-lingual off/on, both sides from the same proposers (ID's curated labels are English)
  rows=(
    "local_extractive    labels.proposers=[extractive]"
    "english_extractive  labels.proposers=[extractive] labels.cross_lingual=true"
    "local_extractive_score    @local_extractive"
    "english_extractive_score  @english_extractive"
  )
else
  rows=(
    "compressed   labels=compressed"
    "curated      labels=curated"
    "original     labels=original"
    "symbolic     labels=symbolic"
    "summary      labels=summary"
    "compressed_score  @compressed"
    "curated_score     @curated"
    "original_score    @original"
    "symbolic_score    @symbolic"
  )
fi
finished() {
  python - "$1/results.json" <<'PY' 2>/dev/null
import json, sys
sys.exit(0 if any(k.startswith("test/") for k in json.load(open(sys.argv[1]))["metrics"]) else 1)
PY
}
for row in "${rows[@]}"; do
  read -r name overrides <<<"$row"
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  dir=$root/$name
  if finished "$dir"; then echo "[st_table] $market/$name: done, skipped"; continue; fi
  if [[ $overrides == @* ]]; then  # exact scoring of a trained row's checkpoint, same labels
    trained=${overrides#@}
    ckpt=$(find "$root/$trained" -name 'best*.ckpt' 2>/dev/null | head -n 1)
    [ -z "$ckpt" ] && ckpt=$(find "$root/$trained" -name '*.ckpt' 2>/dev/null | head -n 1)
    if [ -z "$ckpt" ]; then echo "[st_table] $market/$name: no checkpoint of $trained yet, skipped"; continue; fi
    row_overrides=$(grep -E "^ *$trained " <(printf '%s\n' "${rows[@]}") | head -n 1 | awk '{$1=""; print}')
    overrides="$row_overrides pipeline.fit=false pipeline.checkpoint=$ckpt model.decode=score"
  fi
  echo "[st_table] $market/$name: $base $overrides ${extra[*]} ($(date +%H:%M:%S))"
  # shellcheck disable=SC2086
  python run.py $base $overrides "${extra[@]}" hydra.run.dir="$dir" logger=csv >"$dir.log" 2>&1 \
    || echo "[st_table] $market/$name FAILED (see $dir.log)"
  tail -n 2 "$dir.log" | grep -E "^\[mtic\]" || true
done

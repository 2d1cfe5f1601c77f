#!/usr/bin/env bash
# Table 3 and Table 4 under the label-free protocol, one market: every row runs alone, one after the other
# (2 cores: nothing else should run beside it), each into outputs/table3/<market>/<row>/ (results.json,
# predictions.jsonl). Rows already finished (a results.json with test metrics) are skipped, so the script resumes.
#   bash experiments/table3.sh sg [extra Hydra overrides for every row, e.g. llm.model=gemma3-270m]
# ONLY="tfidf_naive clara" runs just those rows; SKIP="htc_supervised" leaves rows out (for a later call).
# Then: python experiments/compare.py outputs/table3 --rows method,view,candidates,supervision --readme README.md table3
set -uo pipefail
market=${1:?market}; shift
extra=("$@")
root=outputs/table3/$market; mkdir -p "$root"
rows=(
  "tfidf_naive      +experiment=baseline_tfidf data=naive_concat"
  "tfidf_last       +experiment=baseline_tfidf data=last_query"
  "tfidf_last_two   +experiment=baseline_tfidf data=last_two"
  "embedding_naive  +experiment=baseline_embedding data=naive_concat"
  "embedding_last   +experiment=baseline_embedding data=last_query"
  "embedding_last_two +experiment=baseline_embedding data=last_two"
  "single_turn      +experiment=baseline_single"
  "naive_concat     +experiment=baseline_naive"
  "last_two         +experiment=baseline_naive data=last_two method=last_two"
  "selective        +experiment=baseline_select"
  "selective_gold   +experiment=baseline_select_gold"
  "lara             +experiment=lara"
  "lara_no_mc       +experiment=lara pipeline.retrieval.candidates.source=none"
  "lara_pl          +experiment=lara_pl"
  "clara            +experiment=clara"
  "clara_no_mc      +experiment=clara pipeline.retrieval.candidates.source=none"
  "clara_last_two   +experiment=clara data=last_two"
  "lara_pl_paper    +experiment=lara_pl pipeline.pseudo_valid.single_turn=false"
  "clara_paper      +experiment=clara pipeline.pseudo_valid.single_turn=false"
  "st_distill       +experiment=st_distill"
  "st_distill_last_two +experiment=st_distill data=last_two"
  "htc_supervised   +experiment=htc_supervised"
)
for row in "${rows[@]}"; do
  read -r name overrides <<<"$row"
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  if [[ " ${SKIP:-} " == *" $name "* ]]; then continue; fi
  dir=$root/$name
  if python - "$dir/results.json" <<'PY' 2>/dev/null; then echo "[table3] $market/$name: done, skipped"; continue; fi
import json, sys
sys.exit(0 if any(k.startswith("test/") for k in json.load(open(sys.argv[1]))["metrics"]) else 1)
PY
  echo "[table3] $market/$name: $overrides ${extra[*]} ($(date +%H:%M:%S))"
  # shellcheck disable=SC2086
  /usr/bin/time -f "[table3] $market/$name: %e s wall, %M KB peak RSS" \
    python run.py $overrides market="$market" "${extra[@]}" hydra.run.dir="$dir" logger=csv \
    >"$dir.log" 2>&1 || echo "[table3] $market/$name FAILED (see $dir.log)"
  tail -n 3 "$dir.log" | grep -E "^\[table3\]|^\[mtic\]" || true
done

#!/usr/bin/env bash
# Run the same benchmarks on two checkouts of agentic-batch, alternating the arms, N rounds.
# Each arm runs its own tree's bench scripts with PYTHONPATH set to that tree, so the figures compare
# the code, not the scripts. Example (a worktree of the old commit beside the current one):
#   git worktree add --detach /tmp/before 812d7c5
#   bench/compare_trees.sh /tmp/before . 2
set -u
before=${1:?usage: compare_trees.sh BEFORE_TREE AFTER_TREE [ROUNDS]}
after=${2:?usage: compare_trees.sh BEFORE_TREE AFTER_TREE [ROUNDS]}
rounds=${3:-2}
python=${PYTHON:-python3}
for round in $(seq 1 "$rounds"); do
  for tree in "$before" "$after"; do
    cd "$tree" || exit 1
    echo "=== round $round $(git rev-parse --short HEAD) $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    for c in 64 8; do
      PYTHONPATH=$PWD "$python" bench/throughput.py --units 5000 --concurrency "$c" 2>&1 \
        | grep -E "units/s \(start|executor CPU"
    done
    PYTHONPATH=$PWD "$python" bench/create_units.py --units 100000 --files 0 2>&1 | grep -E "^\| (jsonl|csv)"
    PYTHONPATH=$PWD "$python" bench/executor_rss.py --sizes 1000 20000 2>&1 | tail -1
    PYTHONPATH=$PWD "$python" bench/web_latency.py --units 20000 --rounds 15 2>&1 | grep -E "job status|first page|stats"
    cd - >/dev/null || exit 1
  done
done

#!/usr/bin/env bash
# Measure llama.cpp's real CPU buffers (model / KV / compute) on hfmem's header-only GGUF fixtures.
#
#   bench/llamacpp_cpu.sh [WORKDIR]        (default /tmp/llamacpp_cpu; needs cmake, g++, ~20 GB RAM)
#
# 1. llama.cpp b11312 (0c1e57098bba43ac29e6e3b677cdceebdd22334f) = vendor/llama.cpp of the PyPI
#    sdist llama-cpp-python==0.3.36 (the git repo is not needed).
# 2. CPU-only Release build of llama-completion (the classic CLI; llama-cli needs the server build)
#    and llama-batched-bench (the only non-server tool taking -kvu). Build number/commit are passed
#    in because the sdist has no .git.
# 3. fixtures/gguf/make_gguf.write_all, each file truncated (sparse) to data_offset + data_bytes so
#    llama.cpp can mmap it; tensor data reads as zeros. (make_gguf writes distinct token strings, 256
#    byte tokens first: llama.cpp aborts on duplicates, GGML_ASSERT id_to_token.size() == token_to_id.size().)
# 4. One run per setting; the full stderr is WORKDIR/logs/NAME.log, the buffer lines are printed.
#    -lv 4: llama.cpp's own INFO lines (buffer sizes) only show at trace verbosity in this build.
#    --chat-template chatml: the fixtures' chat templates are cut short (from logs) and fail to parse.
#    CPU_REPACK (repacked Q4_K/MXFP4 weights) is real memory: Qwen3-30B needs ~16 GiB, gpt-oss ~11 GiB.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
W=${1:-/tmp/llamacpp_cpu}; mkdir -p "$W/logs" "$W/fx"; cd "$W"
S=$W/llama_cpp_python-0.3.36; BIN=$S/build/bin

# 1. source
[ -d "$S" ] || { [ -f llama_cpp_python-0.3.36.tar.gz ] ||
  pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$W"; tar xzf llama_cpp_python-0.3.36.tar.gz; }

# 2. build
if [ ! -x "$BIN/llama-completion" ] || [ ! -x "$BIN/llama-batched-bench" ]; then
  (cd "$S" && cmake -S vendor/llama.cpp -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_NUMBER=11312 -DLLAMA_BUILD_COMMIT=0c1e570 &&
   time cmake --build build -j"$(nproc)" --target llama-completion llama-batched-bench)
fi
"$BIN/llama-completion" --version

# 3. sparse fixtures (make_gguf writes distinct tokens, as llama.cpp's vocabulary loader wants)
"$PY" - "$ROOT" "$W/fx" <<'EOF'
import os, sys
root, out = sys.argv[1], sys.argv[2]
sys.path[:0] = [root, os.path.join(root, "fixtures", "gguf")]
import make_gguf
from inspector.gguf import parse_gguf

for paths in make_gguf.write_all(out).values():
    for p in paths:
        with open(p, "rb") as f:
            h = parse_gguf(f.read(), name=p, complete=True)
        os.truncate(p, h.data_offset + h.data_bytes)
        print(p, h.data_offset + h.data_bytes)
EOF

# 4. runs
run() {  # NAME TOOL ARGS...
  local name=$1 tool=$2; shift 2
  echo "== $name: $tool $*"
  timeout 600 "$BIN/$tool" "$@" -t 2 -lv 4 > "logs/$name.out" 2> "logs/$name.log" </dev/null \
    && echo "ok" || echo "FAILED rc=$?"
  grep -E "buffer size|KV buffer|llama_kv_cache|n_ctx|n_ubatch|flash_attn|kv_unified|n_seq_max" "logs/$name.log" || true
}
C="-n 1 -p hi -no-cnv --no-warmup --chat-template chatml"; B="-npp 8 -ntg 1"
L=fx/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf; G=fx/gemma-2-2b-it-Q4_K_M.gguf
run llama_a_c4096         llama-completion -m $L -c 4096 $C
run llama_b_c8192_q8_fa   llama-completion -m $L -c 8192 -ctk q8_0 -ctv q8_0 -fa on $C
run llama_c_c4096_fa_off  llama-completion -m $L -c 4096 -fa off $C
run llama_d_c16384_np4    llama-completion -m $L -c 16384 -np 4 $C
run llama_d_c16384_np4_bb llama-batched-bench -m $L -c 16384 -npl 4 $B
run llama_e_c16384_np4_kvu llama-batched-bench -m $L -c 16384 -npl 4 -kvu $B
run gemma_c8192           llama-completion -m $G -c 8192 $C
run gemma_c8192_swa_full  llama-completion -m $G -c 8192 --swa-full $C
run gptoss_c8192          llama-completion -m fx/gpt-oss-20b-mxfp4.gguf -c 8192 $C
run qwen25_split_c4096    llama-completion -m fx/qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf -c 4096 $C
run qwen3_30b_c4096       llama-completion -m fx/Qwen3-30B-A3B-Q4_K_M.gguf -c 4096 $C

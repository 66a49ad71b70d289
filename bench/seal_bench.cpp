// Seal and open throughput for the store's record format (1 KiB and 500 KiB values).
#include <benchmark/benchmark.h>

#include <vector>

#include "coffer/crypto/aead.h"

using namespace coffer::crypto;

static void BM_Seal(benchmark::State& state) {
    auto key = Key::generate(1);
    std::vector<std::uint8_t> data(static_cast<std::size_t>(state.range(0)), 0x5a);
    for (auto _ : state) benchmark::DoNotOptimize(seal(key, data, "secret_data\0id"));
    state.SetBytesProcessed(state.iterations() * state.range(0));
}

static void BM_Open(benchmark::State& state) {
    auto key = Key::generate(1);
    std::vector<std::uint8_t> data(static_cast<std::size_t>(state.range(0)), 0x5a);
    auto sealed = seal(key, data, "secret_data\0id");
    for (auto _ : state) benchmark::DoNotOptimize(open(key, sealed, "secret_data\0id"));
    state.SetBytesProcessed(state.iterations() * state.range(0));
}

BENCHMARK(BM_Seal)->Arg(1024)->Arg(500 * 1024);
BENCHMARK(BM_Open)->Arg(1024)->Arg(500 * 1024);
BENCHMARK_MAIN();

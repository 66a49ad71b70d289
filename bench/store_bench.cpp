// Synchronous write throughput of the store: one small record per write, from 1 and 16 threads.
// Concurrent writers share fsyncs (RocksDB's write groups), so throughput grows with threads.
//
// The argument is the value's size. 200 bytes is a task-sized record, copied into secure memory
// by Batch::put as every caller's value is; 0 bytes needs no secure allocation (SecureBuffer of
// size 0), which shows what the store itself costs, without sodium_malloc.
//
// The store lives in a fresh directory under $TMPDIR: put that on the disk to be measured.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "coffer/store/store.h"

using namespace coffer;
using namespace coffer::store;
namespace fs = std::filesystem;

namespace {

fs::path bench_dir;
std::unique_ptr<Store> bench_store;

void open_store(const benchmark::State&) {
    auto pattern = (fs::temp_directory_path() / "coffer-store-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    bench_dir = pattern;
    auto opened = Store::open({.dir = bench_dir / "store"});
    if (!opened) throw std::runtime_error(opened.error().message);
    bench_store = std::move(opened->store);
}

void close_store(const benchmark::State&) {
    bench_store.reset();
    fs::remove_all(bench_dir);
}

void BM_SyncWrite(benchmark::State& state) {
    const std::string value(static_cast<std::size_t>(state.range(0)), 't');
    std::uint64_t n = 0;
    for (auto _ : state) {
        Batch batch;
        batch.put(Table::tasks, fmt::format("t{:02}-{:09}", state.thread_index(), n++), value);
        if (auto r = bench_store->write(std::move(batch)); !r) {
            state.SkipWithError(r.error().message.c_str());
            break;
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

}  // namespace

BENCHMARK(BM_SyncWrite)
    ->ArgName("value_bytes")
    ->Arg(200)
    ->Arg(0)
    ->Setup(open_store)
    ->Teardown(close_store)
    ->Threads(1)
    ->Threads(16)
    ->UseRealTime()
    ->MinTime(3.0);

BENCHMARK_MAIN();

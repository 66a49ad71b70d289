// Runs a fuzz target without libFuzzer: seeds from tests/fuzz/corpus/<target>/ plus random
// mutations of them, from a fixed seed so that every run is the same. Built with clang and
// -fsanitize=fuzzer the targets link against libFuzzer instead and this file is left out.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
    std::vector<std::string> seeds{""};
    for (int i = 1; i < argc; ++i) {
        std::filesystem::path p(argv[i]);
        if (!std::filesystem::exists(p)) continue;
        auto add = [&](const std::filesystem::path& f) {
            std::ifstream in(f, std::ios::binary);
            std::stringstream ss;
            ss << in.rdbuf();
            seeds.push_back(ss.str());
        };
        if (std::filesystem::is_directory(p))
            for (const auto& e : std::filesystem::directory_iterator(p)) add(e.path());
        else
            add(p);
    }
    const char* env = std::getenv("FUZZ_RUNS");
    long runs = env ? std::atol(env) : 20000;
    std::mt19937_64 rng(0xC0FFE7);
    for (const auto& s : seeds)
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
    for (long i = 0; i < runs; ++i) {
        std::string s = seeds[rng() % seeds.size()];
        int edits = 1 + static_cast<int>(rng() % 8);
        for (int e = 0; e < edits; ++e) {
            switch (rng() % 5) {
                case 0:  // flip a byte
                    if (!s.empty()) s[rng() % s.size()] = static_cast<char>(rng());
                    break;
                case 1:  // insert random bytes
                    s.insert(s.empty() ? 0 : rng() % s.size(),
                             std::string(1 + rng() % 8, static_cast<char>(rng())));
                    break;
                case 2:  // erase a range
                    if (!s.empty()) {
                        auto at = rng() % s.size();
                        s.erase(at, 1 + rng() % 16);
                    }
                    break;
                case 3:  // truncate
                    if (!s.empty()) s.resize(rng() % s.size());
                    break;
                default:  // splice with another seed
                    s += seeds[rng() % seeds.size()];
            }
        }
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
    }
    std::printf("%ld mutated inputs and %zu seeds ran without a crash\n", runs, seeds.size());
    return 0;
}

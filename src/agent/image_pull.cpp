// Pulls from registries into the image store: skopeo fetches, coffer checks, then the store
// takes the blobs. See ImageStore::pull.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>

#include "agent_metrics.h"
#include "coffer/agent/image_store.h"
#include "coffer/agent/layer_check.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "coffer/model/image_ref.h"
#include "coffer/registry/registry.h"
#include "image_index.h"
#include "json_util.h"
#include "store_lock.h"

namespace coffer::agent {
namespace {

namespace json = boost::json;
using registry::sha256_of;
using registry::short_digest;

std::string go_arch() {
    struct utsname u {};
    ::uname(&u);
    std::string_view m = u.machine;
    if (m == "x86_64") return "amd64";
    if (m == "aarch64") return "arm64";
    if (m.starts_with("arm")) return "arm";
    return std::string(m);
}

std::int64_t size_field(const json::object& o) {
    auto* s = o.if_contains("size");
    if (!s || !s->is_int64() || s->as_int64() < 0) return -1;
    return s->as_int64();
}

// A digest the store can name a file by.
bool valid_digest(std::string_view d) {
    return d.size() == 71 && d.starts_with("sha256:") &&
           std::all_of(d.begin() + 7, d.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string blob_file(const std::string& layout, std::string_view digest) {
    return fmt::format("{}/blobs/sha256/{}", layout, digest.substr(7));
}

// A staging directory that is removed with what is in it unless released.
struct Staging {
    std::string path;
    ~Staging() {
        if (!path.empty()) remove_tree(path);
    }
};

void write_synced(const std::string& path, std::string_view content) {
    auto tmp = path + ".new";
    write_file(tmp, content, 0644);
    UniqueFd fd(::open(tmp.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) throw_errno(fmt::format("sync {}", tmp));
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno(fmt::format("rename {}", path));
}

}  // namespace

std::string ImageStore::by_registry_digest(std::string_view digest) const {
    auto index = read_json_file(layout_ + "/index.json");
    if (!index || !index->is_object()) return {};
    auto* m = index->as_object().if_contains("manifests");
    if (!m || !m->is_array()) return {};
    for (auto& e : m->as_array()) {
        if (!e.is_object()) continue;
        auto local = string_at(e.as_object(), "digest");
        if (local == digest) return local;
        if (auto* a = e.as_object().if_contains("annotations"); a && a->is_object())
            if (string_at(a->as_object(), registry_digest_annotation) == digest ||
                string_at(a->as_object(), list_digest_annotation) == digest)
                return local;
    }
    return {};
}

Result<ImageInfo> ImageStore::pull(std::string_view ref, const crypto::SecureBuffer* auth,
                                   const PullOptions& options) {
    std::shared_ptr<Pull> p;
    bool first = false;
    {
        std::unique_lock l(pulls_mu_);
        auto it = pulls_.find(ref);
        if (it == pulls_.end()) {
            p = std::make_shared<Pull>();
            pulls_.emplace(std::string(ref), p);
            first = true;
        } else {
            p = it->second;
            pulls_cv_.wait(l, [&] { return p->done; });
            return p->result;
        }
    }
    Result<ImageInfo> r = make_error(Errc::internal, "pull failed");
    auto started_at = std::chrono::steady_clock::now();
    try {
        r = pull_once(ref, auth, options);
    } catch (const std::exception& e) {
        r = make_error(Errc::internal, fmt::format("pull {}: {}", ref, e.what()));
    }
    image_pull_duration(r ? "pulled" : "failed").observe_since(started_at);
    (void)first;
    std::lock_guard l(pulls_mu_);
    p->result = r;
    p->done = true;
    pulls_.erase(std::string(ref));
    pulls_cv_.notify_all();
    return r;
}

Result<ImageInfo> ImageStore::pull_once(std::string_view ref_text, const crypto::SecureBuffer* auth,
                                        const PullOptions& options) {
    auto parsed = model::parse_image_ref(ref_text);
    if (!parsed) return std::move(parsed).error();
    auto ref = std::move(*parsed);
    auto name = normalize_name(ref.familiar_tagged());
    if (!name) return std::move(name).error();
    std::optional<registry::AuthFile> authfile;
    if (auth && !auth->empty()) authfile.emplace(*auth);
    const registry::AuthFile* af = authfile ? &*authfile : nullptr;

    // 1. The manifest, by digest when the reference has one (the digest is checked), chosen for
    //    this node's platform from a list.
    auto inspect = [&](const std::string& transport) -> Result<std::string> {
        auto m = registry::inspect(ref, transport, af, options);
        if (!m) return std::move(m).error();
        return std::move(m->raw);
    };
    auto raw = inspect(ref.transport());
    if (!raw) return std::move(raw).error();
    std::string registry_digest = sha256_of(*raw);
    if (!ref.digest.empty() && registry_digest != ref.digest)
        return make_error(Errc::invalid_argument,
                          fmt::format("pull {}: the registry sent a manifest with digest {}",
                                      ref.str(), short_digest(registry_digest)));
    boost::system::error_code ec;
    auto manifest = json::parse(*raw, ec);
    if (ec || !manifest.is_object())
        return make_error(Errc::invalid_argument,
                          fmt::format("pull {}: the manifest is not JSON", ref.str()));
    std::string list_digest;
    if (auto* list = manifest.as_object().if_contains("manifests")) {
        list_digest = registry_digest;
        std::string chosen;
        if (list->is_array())
            for (auto& e : list->as_array()) {
                if (!e.is_object()) continue;
                auto* pl = e.as_object().if_contains("platform");
                if (!pl || !pl->is_object()) continue;
                if (string_at(pl->as_object(), "os") == "linux" &&
                    string_at(pl->as_object(), "architecture") == go_arch()) {
                    chosen = string_at(e.as_object(), "digest");
                    break;
                }
            }
        if (!valid_digest(chosen))
            return make_error(
                Errc::not_found,
                fmt::format("pull {}: no image for linux/{} in the list", ref.str(), go_arch()));
        raw = inspect(fmt::format("docker://{}@{}", ref.repository(), chosen));
        if (!raw) return std::move(raw).error();
        registry_digest = sha256_of(*raw);
        if (registry_digest != chosen)
            return make_error(Errc::invalid_argument,
                              fmt::format("pull {}: the registry sent a manifest with digest {}",
                                          ref.str(), short_digest(registry_digest)));
        manifest = json::parse(*raw, ec);
        if (ec || !manifest.is_object())
            return make_error(Errc::invalid_argument,
                              fmt::format("pull {}: the manifest is not JSON", ref.str()));
    }
    // 2. Its size, before anything is fetched.
    {
        auto& m = manifest.as_object();
        auto* layers = m.if_contains("layers");
        auto* config = m.if_contains("config");
        if (!layers || !layers->is_array() || !config || !config->is_object())
            return make_error(Errc::invalid_argument,
                              fmt::format("pull {}: not an image manifest", ref.str()));
        std::uint64_t total = 0;
        std::vector<const json::value*> all{config};
        for (auto& l : layers->as_array()) all.push_back(&l);
        for (const auto* d : all) {
            auto size = d->is_object() ? size_field(d->as_object()) : -1;
            if (size < 0 || !valid_digest(string_at(d->as_object(), "digest")))
                return make_error(Errc::invalid_argument,
                                  fmt::format("pull {}: a descriptor without a valid size or "
                                              "digest",
                                              ref.str()));
            total += static_cast<std::uint64_t>(size);
            if (total > options.max_bytes)
                return make_error(Errc::too_large,
                                  fmt::format("pull {}: the image is larger than this node takes "
                                              "({} bytes)",
                                              ref.str(), options.max_bytes));
        }
    }
    // 3. Known already: only the name moves. The use is recorded at once, so that a prune
    //    looking for unused images leaves it (one under way is caught in step 6).
    std::string local = by_registry_digest(registry_digest);
    if (!local.empty() && valid_digest(local) &&
        ::access(blob_file(layout_, local).c_str(), F_OK) == 0)
        touch_used(local);
    else
        local.clear();

    // From the moment the blobs are in the store until a name points at them, the store's locks
    // are held: a garbage collection in between (a remove's or a prune's umoci gc) would take
    // the blobs no name needs yet.
    std::unique_lock held(mu_, std::defer_lock);
    std::optional<StoreLock> lock;
    Staging staging;
    std::string local_digest = local;
    std::string media_type, manifest_size;
    std::int64_t local_size = 0;
    if (local.empty()) {
        static std::atomic<unsigned> counter{0};
        staging.path = fmt::format("{}/pulls/{}-{}-{}", dir_, registry_digest.substr(7, 12),
                                   ::getpid(), counter++);
        make_dir(dir_ + "/pulls");
        remove_tree(staging.path);
        auto args = std::vector<std::string>{"copy", "--quiet", "--retry-times=0"};
        auto flags = registry::flags(options, ref, af != nullptr, "src-");
        args.insert(args.end(), flags.begin(), flags.end());
        args.push_back(fmt::format("docker://{}@{}", ref.repository(), registry_digest));
        args.push_back(fmt::format("oci:{}:pull", staging.path));
        auto c = registry::skopeo(std::move(args), options, af);
        if (!c.ok()) return registry::failure(c, ref);
        authfile.reset();  // the credentials are not needed any more

        // 4. Every blob checked by coffer itself before the store takes it.
        auto bad = [&](std::string why) {
            return make_error(Errc::invalid_argument,
                              fmt::format("pull {}: {}", ref.str(), std::move(why)));
        };
        auto index = read_json_file(staging.path + "/index.json");
        if (!index || !index->is_object()) return bad("no index in the copy");
        auto* ms = index->as_object().if_contains("manifests");
        if (!ms || !ms->is_array() || ms->as_array().size() != 1 || !ms->as_array()[0].is_object())
            return bad("not one manifest in the copy");
        auto& desc = ms->as_array()[0].as_object();
        local_digest = string_at(desc, "digest");
        media_type = string_at(desc, "mediaType");
        local_size = size_field(desc);
        if (!valid_digest(local_digest)) return bad("a manifest without a valid digest");
        auto stored = read_json_file(blob_file(staging.path, local_digest));
        if (!stored || !stored->is_object()) return bad("unreadable manifest");
        auto* cfg = stored->as_object().if_contains("config");
        auto* layers = stored->as_object().if_contains("layers");
        if (!cfg || !cfg->is_object() || !layers || !layers->is_array())
            return bad("not an image manifest");
        auto config_digest = string_at(cfg->as_object(), "digest");
        if (!valid_digest(config_digest)) return bad("a config without a valid digest");
        std::string config_text;
        {
            UniqueFd fd(::open(blob_file(staging.path, config_digest).c_str(),
                               O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
            if (!fd) return bad("no config blob");
            struct stat st {};
            if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
                st.st_size != size_field(cfg->as_object()) || st.st_size > (16 << 20))
                return bad("the config's size is not what the manifest says");
            config_text.resize(static_cast<std::size_t>(st.st_size));
            if (::pread(fd.get(), config_text.data(), config_text.size(), 0) != st.st_size)
                return bad("unreadable config");
        }
        if (sha256_of(config_text) != config_digest)
            return bad("the config is not what its digest says");
        auto config = json::parse(config_text, ec);
        const json::array* diff_ids = nullptr;
        if (!ec && config.is_object())
            if (auto* rootfs = config.as_object().if_contains("rootfs");
                rootfs && rootfs->is_object())
                if (auto* d = rootfs->as_object().if_contains("diff_ids"); d && d->is_array())
                    diff_ids = &d->as_array();
        if (!diff_ids || diff_ids->size() != layers->as_array().size())
            return bad("the config's diff ids do not match the layers");
        for (std::size_t i = 0; i < layers->as_array().size(); ++i) {
            const auto& l = layers->as_array()[i];
            if (!l.is_object()) return bad("a layer descriptor is not an object");
            auto digest = string_at(l.as_object(), "digest");
            auto size = size_field(l.as_object());
            if (!valid_digest(digest) || size < 0) return bad("a layer without digest or size");
            UniqueFd fd(
                ::open(blob_file(staging.path, digest).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
            if (!fd) return bad(fmt::format("layer {} is missing", short_digest(digest)));
            auto facts = check_layer(fd.get(), string_at(l.as_object(), "mediaType"), digest,
                                     static_cast<std::uint64_t>(size));
            if (!facts) return bad(facts.error().message);
            if (!(*diff_ids)[i].is_string() || facts->diff_id != (*diff_ids)[i].as_string())
                return bad(
                    fmt::format("layer {} is not the one the config names", short_digest(digest)));
        }
        // 5. The store takes the blobs (content-addressed: one already there is the same).
        held.lock();
        lock.emplace(dir_);
        auto blobs = staging.path + "/blobs/sha256";
        for (const auto& e : std::filesystem::directory_iterator(blobs)) {
            auto to = fmt::format("{}/blobs/sha256/{}", layout_, e.path().filename().string());
            struct stat st {};
            if (::lstat(to.c_str(), &st) == 0) continue;
            if (::rename(e.path().c_str(), to.c_str()) != 0) throw_errno("store a blob");
        }
    } else {
        // The descriptor the store has already.
        auto index = read_json_file(layout_ + "/index.json");
        if (index && index->is_object())
            if (auto* ms = index->as_object().if_contains("manifests"); ms && ms->is_array())
                for (auto& e : ms->as_array())
                    if (e.is_object() && string_at(e.as_object(), "digest") == local) {
                        media_type = string_at(e.as_object(), "mediaType");
                        local_size = size_field(e.as_object());
                        break;
                    }
    }
    // 6. The name points at it (the entry it pointed at before goes; its unpacked rootfs
    //    stays for the tasks that run on it).
    {
        if (!held.owns_lock()) {
            held.lock();
            lock.emplace(dir_);
        }
        if (::access(blob_file(layout_, local_digest).c_str(), F_OK) != 0)
            return make_error(Errc::unavailable,
                              fmt::format("pull {}: the image was removed from the store "
                                          "while it was pulled; pull again",
                                          ref.str()));
        auto index = read_json_file(layout_ + "/index.json");
        if (!index || !index->is_object())
            return make_error(Errc::internal, "the image store's index is unreadable");
        auto& ms = index->as_object()["manifests"];
        if (!ms.is_array()) ms = json::array();
        json::array kept;
        for (auto& e : ms.as_array()) {
            if (!e.is_object()) continue;
            const auto* a = e.as_object().if_contains("annotations");
            if (string_at(e.as_object(), "digest") == local_digest ||
                (a && a->is_object() && string_at(a->as_object(), ref_annotation) == *name))
                continue;
            kept.push_back(e);
        }
        json::object annotations{{ref_annotation, *name},
                                 {registry_digest_annotation, registry_digest}};
        if (!list_digest.empty()) annotations[list_digest_annotation] = list_digest;
        kept.push_back(json::object{
            {"mediaType",
             media_type.empty() ? "application/vnd.oci.image.manifest.v1+json" : media_type},
            {"digest", local_digest},
            {"size", local_size},
            {"annotations", std::move(annotations)}});
        ms = std::move(kept);
        write_synced(layout_ + "/index.json", json::serialize(*index));
        touch_used(local_digest);
        lock.reset();
        held.unlock();
    }
    log::info("images", "pulled {} as {} ({}, registry digest {})", ref.str(), *name,
              short_digest(local_digest), short_digest(registry_digest));
    return ImageInfo{*name, local_digest};
}

}  // namespace coffer::agent

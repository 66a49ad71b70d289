#include "coffer/agent/image_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "health.h"
#include "image_index.h"
#include "json_util.h"
#include "store_lock.h"

namespace coffer::agent {
namespace {

bool is_file(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Where the Healthcheck of an image imported from a docker save archive is kept.
std::string healthcheck_file(const std::string& dir, std::string_view digest) {
    auto colon = digest.find(':');
    return fmt::format("{}/healthchecks/{}.json", dir,
                       colon == std::string_view::npos ? digest : digest.substr(colon + 1));
}

bool is_dir(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// (ref name, manifest digest) of every tagged manifest in a layout's index.
std::vector<ImageInfo> tagged(const boost::json::value& index) {
    std::vector<ImageInfo> out;
    if (!index.is_object()) return out;
    auto* m = index.as_object().if_contains("manifests");
    if (!m || !m->is_array()) return out;
    for (auto& e : m->as_array()) {
        if (!e.is_object()) continue;
        auto digest = string_at(e.as_object(), "digest");
        std::string name;
        if (auto* a = e.as_object().if_contains("annotations"); a && a->is_object())
            name = string_at(a->as_object(), ref_annotation);
        out.push_back({std::move(name), std::move(digest)});
    }
    return out;
}

Result<void> skopeo_copy(const std::string& from, const std::string& to) {
    auto r = run_command({"skopeo", "--insecure-policy", "copy", "--quiet", from, to});
    if (!r.ok())
        return make_error(Errc::invalid_argument, fmt::format("import {}: {}", from, r.describe()));
    return {};
}

std::string blob_path(const std::string& layout, std::string_view digest) {
    auto colon = digest.find(':');
    return fmt::format("{}/blobs/{}/{}", layout, digest.substr(0, colon), digest.substr(colon + 1));
}

std::string hex_of(std::string_view digest) {
    auto colon = digest.find(':');
    return std::string(colon == std::string_view::npos ? digest : digest.substr(colon + 1));
}

// The file whose mtime is the image's last use.
std::string used_file(const std::string& dir, std::string_view digest) {
    return fmt::format("{}/used/{}", dir, hex_of(digest));
}

// When the image was last used, or nullopt without a record.
std::optional<std::chrono::system_clock::time_point> last_use(const std::string& dir,
                                                              std::string_view digest) {
    struct stat st {};
    if (::lstat(used_file(dir, digest).c_str(), &st) != 0) return std::nullopt;
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) +
            std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
}

// An empty OCI image layout (image-spec: the `oci-layout` marker, an index without manifests,
// the blob directory), made beside `layout` and renamed into place whole: a crash leaves either
// no layout or a complete one. Written here rather than by `umoci init`, whose Go start-up was
// a third of an agent's first start.
void create_layout(const std::string& layout) {
    const auto staging = layout + ".new";
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
    std::filesystem::create_directories(staging + "/blobs/sha256", ec);
    if (ec) throw SystemError(ec.value(), fmt::format("create {}", staging));
    for (auto [name, content] : {std::pair<const char*, std::string_view>{
                                     "oci-layout", R"({"imageLayoutVersion":"1.0.0"})"},
                                 {"index.json", R"({"schemaVersion":2,"manifests":[]})"}}) {
        auto path = fmt::format("{}/{}", staging, name);
        write_file(path, content, 0644);
        UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd || ::fsync(fd.get()) != 0) throw_errno(fmt::format("sync {}", path));
    }
    if (::rename(staging.c_str(), layout.c_str()) != 0)
        throw_errno(fmt::format("create {}", layout));
}

}  // namespace

ImageStore::ImageStore(std::string dir) : dir_(std::move(dir)), layout_(dir_ + "/oci") {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) throw SystemError(ec.value(), fmt::format("create {}", dir_));
    make_dir(dir_);
    make_dir(dir_ + "/rootfs");
    make_dir(dir_ + "/used");
    if (!is_dir(layout_)) {
        StoreLock lock(dir_);
        if (!is_dir(layout_)) create_layout(layout_);
    }
}

namespace {

// One ':' (the tag) in the last path component; at most one more (a registry's port) in the
// first component of a name with a '/'.
bool colons_ok(std::string_view n) {
    auto slash = n.rfind('/');
    auto last = slash == std::string_view::npos ? n : n.substr(slash + 1);
    if (std::count(last.begin(), last.end(), ':') != 1) return false;
    if (slash == std::string_view::npos) return true;
    auto first_slash = n.find('/');
    auto host = n.substr(0, first_slash);
    auto middle = n.substr(first_slash, slash - first_slash);
    return std::count(host.begin(), host.end(), ':') <= 1 &&
           std::count(middle.begin(), middle.end(), ':') == 0;
}

}  // namespace

Result<std::string> ImageStore::normalize_name(std::string_view name) {
    // Docker's familiar form: "docker.io/library/busybox" and "docker.io/busybox" are "busybox",
    // "docker.io/saved/app" is "saved/app" (skopeo records the full form in archives, docker save
    // the familiar one; both name the same image).
    for (std::string_view prefix : {"docker.io/library/", "docker.io/"}) {
        if (name.starts_with(prefix)) {
            name.remove_prefix(prefix.size());
            break;
        }
    }
    std::string n(name);
    auto slash = n.rfind('/');
    auto colon = n.rfind(':');
    if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) n += ":latest";
    auto ok_char = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-' || c == '/' || c == ':';
    };
    if (n.size() > 255 || n.front() == ':' || n.front() == '/' || n.front() == '.' ||
        n.starts_with("sha256:") || !std::all_of(n.begin(), n.end(), ok_char) || !colons_ok(n))
        return make_error(Errc::invalid_argument, fmt::format("invalid image name \"{}\"", name));
    return n;
}

Result<std::vector<ImageInfo>> ImageStore::import(const std::string& source,
                                                  std::string_view name) {
    std::string wanted;
    if (!name.empty()) {
        auto n = normalize_name(name);
        if (!n) return std::move(n).error();
        wanted = *n;
    }
    std::vector<std::pair<std::string, std::string>> copies;  // (skopeo source, our name)
    std::string docker_healthcheck;  // a docker save archive's config's Healthcheck (JSON)
    if (is_dir(source)) {
        auto index = read_json_file(source + "/index.json");
        if (!index) return std::move(index).error().context("import");
        auto images = tagged(*index);
        if (images.empty())
            return make_error(Errc::invalid_argument, fmt::format("{}: no image", source));
        if (!wanted.empty()) {
            auto it = std::find_if(images.begin(), images.end(), [&](auto& i) {
                return !i.name.empty() && *normalize_name(i.name) == wanted;
            });
            if (it != images.end())
                copies.emplace_back(fmt::format("oci:{}:{}", source, it->name), wanted);
            else if (images.size() == 1)
                copies.emplace_back(fmt::format("oci:{}", source), wanted);
            else
                return make_error(Errc::not_found,
                                  fmt::format("{}: no image named {}", source, wanted));
        } else {
            for (auto& i : images) {
                if (i.name.empty()) continue;
                auto n = normalize_name(i.name);
                if (!n) return std::move(n).error();
                copies.emplace_back(fmt::format("oci:{}:{}", source, i.name), *n);
            }
            if (copies.empty())
                return make_error(Errc::invalid_argument,
                                  fmt::format("{}: untagged image, give a name", source));
        }
    } else {
        auto listing = run_command({"tar", "-tf", source});
        if (!listing.ok())
            return make_error(Errc::invalid_argument,
                              fmt::format("{}: not an archive ({})", source, listing.describe()));
        auto has = [&](std::string_view entry) {
            return listing.out.find(fmt::format("\n{}\n", entry)) != std::string::npos ||
                   listing.out.starts_with(fmt::format("{}\n", entry)) ||
                   listing.out.find(fmt::format("\n./{}\n", entry)) != std::string::npos ||
                   listing.out.starts_with(fmt::format("./{}\n", entry));
        };
        auto member = [&](std::string_view entry) -> Result<boost::json::value> {
            auto r = run_command({"tar", "-xOf", source, "--wildcards", fmt::format("*{}", entry)});
            boost::system::error_code ec;
            auto v = boost::json::parse(r.out, ec);
            if (!r.ok() || ec)
                return make_error(Errc::invalid_argument,
                                  fmt::format("{}: unreadable {}", source, entry));
            return v;
        };
        std::string recorded;
        std::string transport;
        if (has("oci-layout")) {
            transport = "oci-archive";
            auto index = member("index.json");
            if (!index) return std::move(index).error();
            for (auto& i : tagged(*index))
                if (!i.name.empty()) recorded = i.name;
        } else if (has("manifest.json")) {
            transport = "docker-archive";
            auto manifest = member("manifest.json");
            if (!manifest) return std::move(manifest).error();
            if (manifest->is_array() && !manifest->as_array().empty() &&
                manifest->as_array()[0].is_object()) {
                auto tags = strings_at(manifest->as_array()[0].as_object(), "RepoTags");
                if (!tags.empty()) recorded = tags.front();
                // The conversion to an OCI config drops Docker's Healthcheck (HEALTHCHECK): it
                // is kept beside the image, as the archive's config has it.
                auto config_path = string_at(manifest->as_array()[0].as_object(), "Config");
                if (!config_path.empty()) {
                    auto config = member(config_path);
                    if (!config) return std::move(config).error();
                    const boost::json::value* hc = nullptr;
                    if (auto* c = config->is_object() ? config->as_object().if_contains("config")
                                                      : nullptr;
                        c && c->is_object())
                        hc = c->as_object().if_contains("Healthcheck");
                    if (hc && !hc->is_null()) docker_healthcheck = boost::json::serialize(*hc);
                }
            }
        } else {
            return make_error(
                Errc::invalid_argument,
                fmt::format("{}: neither a docker save archive nor an OCI archive", source));
        }
        if (wanted.empty()) {
            if (recorded.empty())
                return make_error(Errc::invalid_argument,
                                  fmt::format("{}: no name recorded, give a name", source));
            auto n = normalize_name(recorded);
            if (!n) return std::move(n).error();
            wanted = *n;
        }
        copies.emplace_back(fmt::format("{}:{}", transport, source), wanted);
    }

    StoreLock lock(dir_);
    std::vector<ImageInfo> out;
    for (auto& [from, to] : copies) {
        if (auto r = skopeo_copy(from, fmt::format("oci:{}:{}", layout_, to)); !r)
            return std::move(r).error();
        auto d = digest_of(to);
        if (!d) return std::move(d).error();
        if (!docker_healthcheck.empty()) {
            make_dir(dir_ + "/healthchecks", 0700);
            write_file(healthcheck_file(dir_, *d), docker_healthcheck);
        }
        touch_used(*d);
        log::info("images", "imported {} as {} ({})", from, to, *d);
        out.push_back({to, *d});
    }
    return out;
}

Result<std::vector<ImageInfo>> ImageStore::list() const {
    auto index = read_json_file(layout_ + "/index.json");
    if (!index) return std::move(index).error();
    auto all = tagged(*index);
    std::erase_if(all, [](auto& i) { return i.name.empty(); });
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.name < b.name; });
    return all;
}

Result<std::string> ImageStore::digest_of(std::string_view ref) const {
    auto all = list();
    if (!all) return std::move(all).error();
    if (ref.starts_with("sha256:")) {
        for (auto& i : *all)
            if (i.digest == ref) return i.digest;
        return make_error(Errc::not_found, fmt::format("no image with digest {}", ref));
    }
    auto n = normalize_name(ref);
    if (!n) return std::move(n).error();
    for (auto& i : *all)
        if (i.name == *n) return i.digest;
    return make_error(Errc::not_found, fmt::format("no such image: {}", *n));
}

Result<void> ImageStore::remove(std::string_view ref,
                                const std::function<bool(std::string_view)>& in_use) {
    std::lock_guard g(mu_);
    StoreLock lock(dir_);
    auto n = normalize_name(ref);
    if (!n) return std::move(n).error();
    auto all = list();
    if (!all) return std::move(all).error();
    auto it = std::find_if(all->begin(), all->end(), [&](auto& i) { return i.name == *n; });
    if (it == all->end()) return make_error(Errc::not_found, fmt::format("no such image: {}", *n));
    std::string digest = it->digest;
    bool shared =
        std::count_if(all->begin(), all->end(), [&](auto& i) { return i.digest == digest; }) > 1;
    if (!shared && in_use && in_use(digest))
        return make_error(Errc::conflict, fmt::format("image {} is used by a running task", *n));
    auto r = run_command({"umoci", "rm", "--image", fmt::format("{}:{}", layout_, *n)});
    if (!r.ok()) return make_error(Errc::internal, fmt::format("remove {}: {}", *n, r.describe()));
    r = run_command({"umoci", "gc", "--layout", layout_});
    if (!r.ok()) log::warn("images", "garbage collection of the layout failed: {}", r.describe());
    if (!shared) {
        ::unlink(healthcheck_file(dir_, digest).c_str());
        ::unlink(used_file(dir_, digest).c_str());
        remove_tree(fmt::format("{}/rootfs/{}", dir_, hex_of(digest)));
        resolved_.erase(digest);
    }
    log::info("images", "removed {} ({})", *n, digest);
    return {};
}

void ImageStore::touch_used(std::string_view digest) const {
    // Never fails the caller: without a record, prune counts the image as used now.
    auto path = used_file(dir_, digest);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd || ::futimens(fd.get(), nullptr) != 0)
        log::warn("images", "record the use of {} in {}: {}", digest, path, std::strerror(errno));
}

Result<std::vector<ImageInfo>> ImageStore::prune(
    const std::function<bool(std::string_view)>& in_use, const PruneOptions& options) {
    std::lock_guard g(mu_);
    StoreLock lock(dir_);
    auto index = read_json_file(layout_ + "/index.json");
    if (!index) return std::move(index).error().context("prune");
    struct Entry {
        ImageInfo image;
        bool pulled = false;
        bool removed = false;
    };
    std::vector<Entry> entries;
    if (auto* m = index->is_object() ? index->as_object().if_contains("manifests") : nullptr;
        m && m->is_array())
        for (auto& e : m->as_array()) {
            if (!e.is_object()) continue;
            Entry entry{{"", string_at(e.as_object(), "digest")}};
            if (auto* a = e.as_object().if_contains("annotations"); a && a->is_object()) {
                entry.image.name = string_at(a->as_object(), ref_annotation);
                entry.pulled = !string_at(a->as_object(), registry_digest_annotation).empty();
            }
            entries.push_back(std::move(entry));
        }

    // Decided once per manifest digest: all the names selected on one image go, or none.
    const auto now = std::chrono::system_clock::now();
    std::map<std::string, bool, std::less<>> unused;
    auto is_unused = [&](const std::string& digest) {
        auto [it, fresh] = unused.try_emplace(digest, false);
        if (!fresh) return it->second;
        const bool timed = options.unused_for.count() > 0;
        if (in_use && in_use(digest)) {
            // In use now: its period starts again when its last task ends, not when it started.
            if (timed) touch_used(digest);
            return false;
        }
        if (!timed) return it->second = true;
        auto last = last_use(dir_, digest);
        // An image from before uses were recorded starts its period now.
        if (!last) touch_used(digest);
        return it->second = last && now - *last > options.unused_for;
    };

    std::vector<ImageInfo> out;
    std::optional<Error> failed;
    for (auto& e : entries) {
        if (e.image.name.empty() || (!e.pulled && !options.all) || !is_unused(e.image.digest))
            continue;
        auto r =
            run_command({"umoci", "rm", "--image", fmt::format("{}:{}", layout_, e.image.name)});
        if (!r.ok()) {
            log::warn("images", "prune {}: {}", e.image.name, r.describe());
            if (!failed)
                failed =
                    Error{Errc::internal, fmt::format("prune {}: {}", e.image.name, r.describe())};
            continue;
        }
        e.removed = true;
        log::info("images", "pruned {} ({})", e.image.name, e.image.digest);
        out.push_back(e.image);
    }
    if (!out.empty()) {
        auto r = run_command({"umoci", "gc", "--layout", layout_});
        if (!r.ok())
            log::warn("images", "garbage collection of the layout failed: {}", r.describe());
    }
    // The caches of images no name is left on, and records of images the store lost otherwise.
    std::set<std::string, std::less<>> kept;
    for (auto& e : entries)
        if (!e.removed) kept.insert(hex_of(e.image.digest));
    for (auto& e : out) {
        auto hex = hex_of(e.digest);
        if (kept.contains(hex)) continue;
        ::unlink(healthcheck_file(dir_, e.digest).c_str());
        resolved_.erase(e.digest);
        try {
            remove_tree(fmt::format("{}/rootfs/{}", dir_, hex));
        } catch (const std::exception& ex) {
            log::warn("images", "remove the unpacked rootfs of {}: {}", e.digest, ex.what());
        }
    }
    for (auto& hex : list_dir(dir_ + "/used"))
        if (!kept.contains(hex)) ::unlink(fmt::format("{}/used/{}", dir_, hex).c_str());
    if (failed) return std::move(*failed);
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
    return out;
}

Result<ResolvedImage> ImageStore::resolve(std::string_view ref) {
    std::lock_guard g(mu_);
    auto all = list();
    if (!all) return std::move(all).error();
    std::string digest, tag;
    if (auto at = ref.find('@'); at != std::string_view::npos) {
        // Pinned: the image pulled with that registry digest, under whatever name it has.
        auto local = by_registry_digest(ref.substr(at + 1));
        for (auto& i : *all)
            if (!local.empty() && i.digest == local) {
                digest = i.digest;
                tag = i.name;
                break;
            }
        if (digest.empty())
            return make_error(Errc::not_found, fmt::format("no such image: {}", ref));
    }
    for (auto& i : *all) {
        if (!digest.empty()) break;
        if ((ref.starts_with("sha256:") && i.digest == ref) ||
            (!ref.starts_with("sha256:") && normalize_name(ref).ok() &&
             i.name == *normalize_name(ref))) {
            digest = i.digest;
            tag = i.name;
            break;
        }
    }
    if (digest.empty()) return make_error(Errc::not_found, fmt::format("no such image: {}", ref));
    touch_used(digest);
    if (auto it = resolved_.find(digest); it != resolved_.end()) return it->second;

    ResolvedImage img;
    img.digest = digest;
    img.rootfs = fmt::format("{}/rootfs/{}", dir_, hex_of(digest));
    if (!is_dir(img.rootfs)) {
        StoreLock lock(dir_);
        if (!is_dir(img.rootfs)) {
            auto tmp = fmt::format("{}/rootfs/.unpack-{}", dir_, hex_of(digest));
            remove_tree(tmp);
            auto r = run_command(
                {"umoci", "raw", "unpack", "--image", fmt::format("{}:{}", layout_, tag), tmp});
            if (!r.ok()) {
                remove_tree(tmp);
                return make_error(Errc::internal, fmt::format("unpack {}: {}", tag, r.describe()));
            }
            if (::rename(tmp.c_str(), img.rootfs.c_str()) != 0)
                throw_errno(fmt::format("rename to {}", img.rootfs));
            log::info("images", "unpacked {} into {}", tag, img.rootfs);
        }
    }
    auto manifest = read_json_file(blob_path(layout_, digest));
    if (!manifest || !manifest->is_object())
        return make_error(Errc::internal, fmt::format("{}: unreadable manifest", tag));
    auto* cfg_desc = manifest->as_object().if_contains("config");
    if (cfg_desc && cfg_desc->is_object()) {
        auto config =
            read_json_file(blob_path(layout_, string_at(cfg_desc->as_object(), "digest")));
        if (config && config->is_object()) {
            if (auto* c = config->as_object().if_contains("config"); c && c->is_object()) {
                auto& o = c->as_object();
                img.config = {strings_at(o, "Entrypoint"), strings_at(o, "Cmd"),
                              strings_at(o, "Env"), string_at(o, "WorkingDir"),
                              string_at(o, "User")};
                std::optional<boost::json::value> kept;
                auto* hc = o.if_contains("Healthcheck");
                if ((hc == nullptr || hc->is_null()) && is_file(healthcheck_file(dir_, digest))) {
                    auto k = read_json_file(healthcheck_file(dir_, digest));
                    if (k) kept = std::move(*k);
                    hc = kept ? &*kept : nullptr;
                }
                if (hc && !hc->is_null()) {
                    auto h = healthcheck_from_image_json(*hc);
                    if (h)
                        img.config.healthcheck = std::move(*h);
                    else
                        img.config.healthcheck_error = h.error().message;
                }
            }
        }
    }
    resolved_.emplace(digest, img);
    return img;
}

}  // namespace coffer::agent

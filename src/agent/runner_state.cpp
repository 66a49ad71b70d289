// What tasks leave outside the runner's memory, found by name: containers in the runtime's
// state, task directories and their mounts under the run and data directories, cgroups under
// the runner's parent. Used to clean up after a runner that did not end (recover_leftovers) and
// to tell, from another process, whether an image is in use.
#include <sys/mount.h>

#include <sodium.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "coffer/base/log.h"
#include "runner_impl.h"

namespace coffer::agent {

Leftovers Runner::recover_leftovers() {
    Leftovers l;
    auto& im = *impl_;
    for (auto& id : im.runtime->list()) {
        (void)im.runtime->kill(id, SIGKILL, true);
        if (auto r = im.runtime->remove(id, true); !r)
            log::warn("runner", "leftover container {}: {}", id, r.error().message);
        else
            log::info("runner", "removed leftover container {}", id);
        ++l.containers;
    }
    // FUSE mounts first: their connections are aborted so that nothing waits on them.
    try {
        l.mounts += static_cast<int>(im.secret_backends->remove_leftovers(im.tasks_dir()));
    } catch (const std::exception& e) {
        log::warn("runner", "leftover secret mounts under {}: {}", im.tasks_dir(), e.what());
    }
    for (const auto& base : {im.tasks_dir(), im.layers_dir()}) {
        for (auto& name : list_dir(base)) {
            auto path = fmt::format("{}/{}", base, name);
            // Its interfaces while its namespace (if this process still sees it) is there.
            if (base == im.tasks_dir())
                l.interfaces += NodeNetworks::remove_task_leftovers(path, im.opt.cni_path);
            for (auto& m : mounts_under(path)) {
                if (::umount2(m.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) ++l.mounts;
            }
            try {
                remove_tree(path);
                if (base == im.tasks_dir()) ++l.task_dirs;
                log::info("runner", "removed leftover {}", path);
            } catch (const std::exception& e) {
                log::warn("runner", "leftover {}: {}", path, e.what());
            }
        }
    }
    for (auto& c : im.cgroups->children(im.cgroup_parent)) {
        if (im.cgroups->remove(im.cgroup_parent + "/" + c, std::chrono::seconds(5))) ++l.cgroups;
    }
    return l;
}

std::string Runner::cgroup_parent(const std::string& run_dir) {
    std::error_code ec;
    auto absolute = std::filesystem::weakly_canonical(run_dir, ec);
    std::string path = ec ? run_dir : absolute.string();
    unsigned char digest[6];
    crypto_generichash(digest, sizeof digest, reinterpret_cast<const unsigned char*>(path.data()),
                       path.size(), nullptr, 0);
    std::string hex = "/coffer/";
    for (unsigned char b : digest) hex += fmt::format("{:02x}", b);
    return hex;
}

bool Runner::image_in_use(const std::string& run_dir, std::string_view digest) {
    for (auto& name : list_dir(run_dir + "/tasks")) {
        std::ifstream in(fmt::format("{}/tasks/{}/image", run_dir, name));
        std::string d;
        if (in >> d && d == digest) return true;
    }
    return false;
}

}  // namespace coffer::agent

// Paths inside an untrusted root filesystem (an image's rootfs), resolved as the container will
// see them: a symlink is followed, but never out of the root.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/base/unique_fd.h"

namespace coffer::agent {

enum class Leaf { directory, file };

// Resolves the absolute path inside the tree below root_fd the way the container will: symlinks
// are followed, an absolute link target restarts at the root and `..` stops there, as a chroot
// would. Each step opens the next component relative to the previous one with O_NOFOLLOW, so
// nothing outside root is ever touched. Missing components are created (directories 0755, a
// missing file leaf as an empty 0444 file). Returns the resolved absolute path, free of symlinks,
// so that the runtime's own in-root resolution finds the same place.
// Errors (invalid_argument): a non-directory in the middle, a leaf of the wrong kind, a leaf that
// is neither a directory nor a regular file, more than 40 links.
Result<std::string> make_mountpoint_in_root(int root_fd, std::string_view path, Leaf leaf);

// Checks that the runtime may mount on, or create in, the absolute path inside the tree below
// root_fd without being led anywhere else: no component is a symbolic link, every existing
// component but the leaf is a directory, and an existing leaf is a directory (Leaf::directory)
// or a regular file (Leaf::file). A missing tail is fine: the runtime creates it below a real
// directory. Nothing is followed or created. Errors (invalid_argument) name the first component
// that is not what it must be: "/dev is a symbolic link", "/etc/hosts is not a regular file".
Result<void> check_runtime_path_in_root(int root_fd, std::string_view path, Leaf leaf);

// The bytes of the regular file at the absolute path inside the tree below root_fd, resolved
// as the container would (links followed, never out of root). nullopt when it does not exist;
// invalid_argument when it is not a regular file or larger than max_bytes.
Result<std::optional<std::string>> read_file_in_root(int root_fd, std::string_view path,
                                                     std::size_t max_bytes);

}  // namespace coffer::agent

namespace coffer::agent {

// Opens the directory at path below root_fd, a path as make_mountpoint_in_root returns it (free
// of links): every component is opened with O_NOFOLLOW, so a link fails (invalid_argument)
// instead of leading anywhere.
Result<UniqueFd> open_dir_in_root(int root_fd, std::string_view path);

}  // namespace coffer::agent

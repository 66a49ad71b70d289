// Image references as Docker reads them: [domain[:port]/]path[:tag][@sha256:<hex>], where the
// first component is a domain when it has a '.' or a ':' or is "localhost"; otherwise the image
// is on Docker Hub (docker.io, "library/" for one-component paths).
#pragma once

#include <string>
#include <string_view>

#include "coffer/base/error.h"

namespace coffer::model {

struct ImageRef {
    std::string domain;  // "docker.io", "registry.example:5000", "localhost:5000"
    std::string path;    // "library/busybox", "team/app"
    std::string tag;     // "latest" when neither tag nor digest was given; "" with a digest only
    std::string digest;  // "sha256:<64 hex>" or ""

    // "registry.example:5000/team/app" (docker.io's images: "docker.io/library/busybox").
    std::string repository() const { return domain + "/" + path; }
    // Docker's short form: "busybox", "team/app", "registry.example:5000/team/app".
    std::string familiar() const;
    // familiar() with ":tag" (latest when none): the name a node's store keeps it under.
    std::string familiar_tagged() const;
    // What the manager and nodes hand to skopeo: docker://repository[:tag][@digest], the
    // digest alone when there is one.
    std::string transport() const;
    // The reference as written back into a spec: familiar()[:tag][@digest].
    std::string str() const;
};

// invalid_argument, naming the reference, for anything Docker would not accept.
Result<ImageRef> parse_image_ref(std::string_view ref);

}  // namespace coffer::model

// The DNS server the agent runs for its tasks (UDP and TCP, port 53 of its own address on each
// network). A query is answered for the task that asked, known by its source address on the
// network the query came in on: the names of the services on that task's networks; other names
// go to the node's resolvers, except for a task that is on internal networks only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "coffer/agent/dns_message.h"
#include "coffer/base/error.h"
#include "coffer/nodeproto/networks.h"

namespace coffer::agent {

// TTLs of the answers. A VIP lives as long as its service; task addresses change as tasks come
// and go, so they are given for a few seconds only. (Docker gives 600 s to every answer.)
inline constexpr std::uint32_t vip_ttl = 600;
inline constexpr std::uint32_t task_address_ttl = 5;

// The names each task may resolve, built from a networks message.
class NameTable {
  public:
    NameTable() = default;
    explicit NameTable(const nodeproto::NetworksMessage& m);

    struct Answer {
        enum class Kind {
            refused,  // the source is no task on that network
            found,    // a name of the asker's networks: addresses (A) with ttl
            unknown,  // not one of ours: forward when forward is set
        };
        Kind kind = Kind::refused;
        std::vector<dns::Ipv4> addresses;
        std::uint32_t ttl = 0;
        bool forward = false;  // the asker is on a network that is not internal
    };
    // name as dns::Query::name has it (lowered, no trailing dot). The networks are searched in
    // the message's order; the first one that has the name answers.
    Answer lookup(std::string_view network_id, std::uint32_t source, std::string_view name) const;

  private:
    struct Entry {
        std::vector<dns::Ipv4> addresses;
        std::uint32_t ttl = 0;
    };
    struct Network {
        bool internal = false;
        std::unordered_map<std::uint32_t, std::string> task_by_address;  // host order -> task id
        std::unordered_map<std::string, Entry> names;
    };
    std::unordered_map<std::string, std::size_t> network_index_;
    std::vector<Network> networks_;
    std::unordered_map<std::string, std::vector<std::size_t>> task_networks_;  // in message order
};

// The non-loopback nameservers of a resolv.conf text ("nameserver X" lines, at most three).
std::vector<std::string> nameservers_from(std::string_view resolv_conf);

class Resolver {
  public:
    // Forwards to the node's nameservers, read from /etc/resolv.conf.
    Resolver();
    // upstream: IPv4 or IPv6 addresses, each optionally with a port ("192.0.2.53:5353",
    // "[2001:db8::53]:53"); at most three are used, in order, each given 2 s. Queries are
    // forwarded from the resolver's thread, made here: from the calling thread's network
    // namespace. Throws SystemError when the thread or its wake-up descriptor cannot be made.
    explicit Resolver(std::vector<std::string> upstream);
    ~Resolver();
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    // Answers from m from now on, and listens on port 53 (UDP and TCP) of every network's
    // gateway address, closing the listeners of networks that are gone. New sockets are made in
    // the network namespace of the calling thread, bound with IP_FREEBIND (the address may be
    // put on its bridge after this call). On error (a socket that cannot be bound), nothing
    // changes.
    Result<void> set(const nodeproto::NetworksMessage& m);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::agent

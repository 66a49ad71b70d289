// The agent's names and rules without the network: DNS messages, the name table, the rules text.
#include <gtest/gtest.h>
#include <cstdint>
#include <string>
#include <vector>

#include "coffer/agent/dns_message.h"
#include "coffer/agent/net_rules.h"
#include "coffer/agent/resolver.h"

namespace dns = coffer::agent::dns;
using coffer::agent::NameTable;
using coffer::nodeproto::NetworksMessage;
using Bytes = std::vector<std::uint8_t>;

namespace {

void put16(Bytes& b, std::uint16_t v) {
    b.push_back(static_cast<std::uint8_t>(v >> 8));
    b.push_back(static_cast<std::uint8_t>(v));
}

Bytes header(std::uint16_t flags = 0x0100, std::uint16_t qd = 1, std::uint16_t an = 0,
             std::uint16_t ar = 0) {
    Bytes b;
    put16(b, 0xbeef);
    put16(b, flags);
    put16(b, qd);
    put16(b, an);
    put16(b, 0);
    put16(b, ar);
    return b;
}

Bytes name(const std::vector<std::string>& labels) {
    Bytes b;
    for (const auto& l : labels) {
        b.push_back(static_cast<std::uint8_t>(l.size()));
        b.insert(b.end(), l.begin(), l.end());
    }
    b.push_back(0);
    return b;
}

Bytes query(const std::vector<std::string>& labels, std::uint16_t type = dns::type_a) {
    Bytes b = header();
    Bytes n = name(labels);
    b.insert(b.end(), n.begin(), n.end());
    put16(b, type);
    put16(b, dns::class_in);
    return b;
}

dns::Parsed::Status status(const Bytes& b) {
    return dns::parse_query(b).status;
}

std::uint32_t addr(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    return (std::uint32_t{a} << 24) | (std::uint32_t{b} << 16) | (std::uint32_t{c} << 8) | d;
}

NetworksMessage two_networks() {
    NetworksMessage m;
    m.sequence = 1;
    auto& a = m.networks.emplace_back();
    a.id = "neta";
    a.name = "front";
    a.subnet = "10.0.1.0/24";
    a.gateway = "10.0.1.2";
    a.services.push_back({"s1",
                          "Web",
                          "vip",
                          "10.0.1.3",
                          {"www"},
                          {{"t1", "web.1.t1", "10.0.1.7"}, {"t2", "web.2.t2", "10.0.1.8"}}});
    a.services.push_back({"s2", "rr", "dnsrr", "", {}, {{"t3", "rr.1.t3", "10.0.1.9"}}});
    a.services.push_back({"s4", "idle", "vip", "10.0.1.4", {}, {}});
    auto& b = m.networks.emplace_back();
    b.id = "netb";
    b.name = "back";
    b.subnet = "10.0.2.0/24";
    b.gateway = "10.0.2.2";
    b.internal = true;
    b.services.push_back({"s3", "db", "vip", "10.0.2.3", {}, {{"t4", "db.1.t4", "10.0.2.7"}}});
    // t1 is on both networks.
    b.services.push_back({"s1", "web", "vip", "10.0.2.4", {}, {{"t1", "web.1.t1", "10.0.2.8"}}});
    return m;
}

}  // namespace

TEST(DnsQuery, ReadsNameLoweredTypeAndEdnsSize) {
    Bytes b = header(0x0100, 1, 0, 1);
    Bytes n = name({"Tasks", "WEB"});
    b.insert(b.end(), n.begin(), n.end());
    put16(b, dns::type_aaaa);
    put16(b, dns::class_in);
    b.push_back(0);  // OPT, owned by the root
    put16(b, dns::type_opt);
    put16(b, 1232);
    put16(b, 0);
    put16(b, 0);
    put16(b, 0);
    auto p = dns::parse_query(b);
    ASSERT_EQ(p.status, dns::Parsed::Status::ok);
    EXPECT_EQ(p.query.id, 0xbeef);
    EXPECT_EQ(p.query.name, "tasks.web");
    EXPECT_TRUE(p.query.plain);
    EXPECT_EQ(p.query.qtype, dns::type_aaaa);
    EXPECT_TRUE(p.query.edns);
    EXPECT_EQ(p.query.udp_size, 1232u);
    EXPECT_EQ(p.query.wire_name, n);  // case kept for the echo
}

TEST(DnsQuery, RefusesWhatIsNotAWellFormedQuery) {
    EXPECT_EQ(status(Bytes(11, 0)), dns::Parsed::Status::drop);  // no header
    Bytes response = query({"web"});
    response[2] |= 0x80;
    EXPECT_EQ(status(response), dns::Parsed::Status::drop);  // a response is never answered
    Bytes notify = query({"web"});
    notify[2] |= 4 << 3;  // opcode NOTIFY
    EXPECT_EQ(status(notify), dns::Parsed::Status::notimp);
    Bytes two = query({"web"});
    two[5] = 2;
    EXPECT_EQ(status(two), dns::Parsed::Status::formerr);
    Bytes trailing = query({"web"});
    trailing.push_back(0);
    EXPECT_EQ(status(trailing), dns::Parsed::Status::formerr);
    Bytes cut = query({"web"});
    cut.resize(cut.size() - 1);
    EXPECT_EQ(status(cut), dns::Parsed::Status::formerr);
    EXPECT_EQ(status(query({std::string(64, 'a')})), dns::Parsed::Status::formerr);
    // 5 labels of 63: 320 bytes, over the 255 of a name.
    std::vector<std::string> long_name(5, std::string(63, 'a'));
    EXPECT_EQ(status(query(long_name)), dns::Parsed::Status::formerr);
    EXPECT_EQ(status(query({std::string(63, 'a'), std::string(63, 'b'), std::string(63, 'c'),
                            std::string(61, 'd')})),
              dns::Parsed::Status::ok);  // 255 exactly
}

TEST(DnsQuery, CompressionPointersOnlyGoBackwards) {
    Bytes self = header();
    self.push_back(0xc0);  // the question's name points at itself
    self.push_back(12);
    put16(self, dns::type_a);
    put16(self, dns::class_in);
    EXPECT_EQ(status(self), dns::Parsed::Status::formerr);

    Bytes forward = header();
    forward.push_back(0xc0);  // at a name that follows
    forward.push_back(18);
    put16(forward, dns::type_a);
    put16(forward, dns::class_in);
    Bytes n = name({"web"});
    forward.insert(forward.end(), n.begin(), n.end());
    EXPECT_EQ(status(forward), dns::Parsed::Status::formerr);

    Bytes reserved = header();
    reserved.push_back(0x40);  // label type 01: reserved
    reserved.push_back(0);
    put16(reserved, dns::type_a);
    put16(reserved, dns::class_in);
    EXPECT_EQ(status(reserved), dns::Parsed::Status::formerr);

    // An OPT whose owner points back at the question's name: a legal pointer, but OPT must be
    // owned by the root.
    Bytes opt = query({"web"});
    opt[11] = 1;
    opt.push_back(0xc0);
    opt.push_back(12);
    put16(opt, dns::type_opt);
    put16(opt, 512);
    put16(opt, 0);
    put16(opt, 0);
    put16(opt, 0);
    EXPECT_EQ(status(opt), dns::Parsed::Status::formerr);
}

TEST(DnsQuery, NamesOutsideServiceCharactersAreNotPlain) {
    auto p = dns::parse_query(query({"we.b"}));  // a dot inside a label
    ASSERT_EQ(p.status, dns::Parsed::Status::ok);
    EXPECT_FALSE(p.query.plain);
    auto root = dns::parse_query(query({}));
    ASSERT_EQ(root.status, dns::Parsed::Status::ok);
    EXPECT_EQ(root.query.name, "");
}

TEST(DnsReply, AnswersTheQuestionAndTruncatesToTheAskersSize) {
    auto p = dns::parse_query(query({"Web"}));
    ASSERT_EQ(p.status, dns::Parsed::Status::ok);
    std::vector<dns::Ipv4> addrs(40, dns::Ipv4{10, 0, 1, 7});
    auto r = dns::build_reply(p.query, dns::Rcode::noerror, addrs, 600, p.query.udp_size);
    EXPECT_LE(r.size(), 512u);
    EXPECT_TRUE(r[2] & 0x02);   // TC: 40 answers do not fit in 512 bytes
    EXPECT_EQ(r[3] & 0x0f, 0);  // NOERROR
    std::uint16_t an = static_cast<std::uint16_t>((r[6] << 8) | r[7]);
    EXPECT_EQ(an, (512 - 12 - 5 - 4) / 16);  // as many as fit
    EXPECT_TRUE(dns::reply_matches(r, p.query));

    auto small = dns::build_reply(p.query, dns::Rcode::noerror, std::span(addrs).first(2), 5, 512);
    EXPECT_FALSE(small[2] & 0x02);
    ASSERT_EQ(small.size(), 12u + 5 + 4 + 2 * 16);
    // First answer: pointer to the question, A, IN, TTL 5, 4 bytes, 10.0.1.7.
    Bytes first(small.begin() + 21, small.begin() + 37);
    EXPECT_EQ(first, (Bytes{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 1, 7}));
    EXPECT_EQ(Bytes(small.begin() + 12, small.begin() + 17), (Bytes{3, 'W', 'e', 'b', 0}));

    auto refused = dns::build_reply(p.query, dns::Rcode::refused, {}, 0, 512);
    EXPECT_EQ(refused[3] & 0x0f, 5);
    dns::Query other = p.query;
    other.id ^= 1;
    EXPECT_FALSE(dns::reply_matches(refused, other));
}

TEST(NameTable, AnswersTheAskersNetworksOnly) {
    NameTable t(two_networks());
    using Kind = NameTable::Answer::Kind;
    auto ask = [&t](const char* net, std::uint32_t src, const char* name) {
        return t.lookup(net, src, name);
    };
    std::uint32_t t1_a = addr(10, 0, 1, 7), t4_b = addr(10, 0, 2, 7);

    auto web = ask("neta", t1_a, "web");  // names without case
    ASSERT_EQ(web.kind, Kind::found);
    EXPECT_EQ(web.addresses, (std::vector<dns::Ipv4>{{10, 0, 1, 3}}));
    EXPECT_EQ(web.ttl, coffer::agent::vip_ttl);
    EXPECT_EQ(ask("neta", t1_a, "www").addresses, web.addresses);
    auto tasks = ask("neta", t1_a, "tasks.web");
    EXPECT_EQ(tasks.addresses, (std::vector<dns::Ipv4>{{10, 0, 1, 7}, {10, 0, 1, 8}}));
    EXPECT_EQ(tasks.ttl, coffer::agent::task_address_ttl);
    EXPECT_EQ(ask("neta", t1_a, "tasks.www").addresses, tasks.addresses);
    EXPECT_EQ(ask("neta", t1_a, "rr").addresses, (std::vector<dns::Ipv4>{{10, 0, 1, 9}}));
    EXPECT_EQ(ask("neta", t1_a, "web.2.t2").addresses, (std::vector<dns::Ipv4>{{10, 0, 1, 8}}));
    // A service without running tasks: its VIP still resolves (the VIP's rules refuse).
    EXPECT_EQ(ask("neta", t1_a, "idle").kind, Kind::found);

    // t1 is on netb too: db resolves for it, asked on either network; web from neta first.
    EXPECT_EQ(ask("neta", t1_a, "db").addresses, (std::vector<dns::Ipv4>{{10, 0, 2, 3}}));
    EXPECT_EQ(ask("netb", addr(10, 0, 2, 8), "web").addresses, web.addresses);
    EXPECT_TRUE(ask("neta", t1_a, "db").forward == true);

    // t3 is on neta only: db is not its name; other names go upstream.
    auto db = ask("neta", addr(10, 0, 1, 9), "db");
    EXPECT_EQ(db.kind, Kind::unknown);
    EXPECT_TRUE(db.forward);

    // t4 is on the internal netb only: nothing is forwarded for it.
    auto out = ask("netb", t4_b, "example.org");
    EXPECT_EQ(out.kind, Kind::unknown);
    EXPECT_FALSE(out.forward);
    EXPECT_EQ(ask("netb", t4_b, "rr").kind, Kind::unknown);

    // Not a task: refused, on an unknown network too, and by address on the right network only.
    EXPECT_EQ(ask("neta", addr(10, 0, 1, 2), "web").kind, Kind::refused);
    EXPECT_EQ(ask("netc", t1_a, "web").kind, Kind::refused);
    EXPECT_EQ(ask("netb", t1_a, "web").kind, Kind::refused);
}

TEST(NameTable, NodeNameserversSkipLoopbackAndKeepThree) {
    auto ns = coffer::agent::nameservers_from(
        "# generated\nsearch example.org\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n"
        "nameserver\t::1\n  nameserver 2001:db8::1 \nnameserver bogus\nnameserver 192.0.2.2\n"
        "nameserver 192.0.2.3\n");
    EXPECT_EQ(ns, (std::vector<std::string>{"192.0.2.1", "2001:db8::1", "192.0.2.2"}));
}

TEST(NetRules, VipRulesSpreadOverTheTasksOfTheTasksNetworks) {
    auto m = two_networks();
    m.networks[0].services.push_back({"s5",
                                      "three",
                                      "vip",
                                      "10.0.1.5",
                                      {},
                                      {{"a", "three.1.a", "10.0.1.20"},
                                       {"b", "three.2.b", "10.0.1.21"},
                                       {"c", "three.3.c", "10.0.1.22"}}});
    auto rules = coffer::agent::task_vip_rules(m, {"neta"});
    EXPECT_EQ(rules,
              "*nat\n"
              ":COFFER-VIP - [0:0]\n"
              "-A COFFER-VIP -d 10.0.1.3/32 -m statistic --mode random --probability "
              "0.50000000000 -j DNAT --to-destination 10.0.1.7\n"
              "-A COFFER-VIP -d 10.0.1.3/32 -j DNAT --to-destination 10.0.1.8\n"
              "-A COFFER-VIP -d 10.0.1.5/32 -m statistic --mode random --probability "
              "0.33333333333 -j DNAT --to-destination 10.0.1.20\n"
              "-A COFFER-VIP -d 10.0.1.5/32 -m statistic --mode random --probability "
              "0.50000000000 -j DNAT --to-destination 10.0.1.21\n"
              "-A COFFER-VIP -d 10.0.1.5/32 -j DNAT --to-destination 10.0.1.22\n"
              "-A OUTPUT -j COFFER-VIP\n"
              "COMMIT\n"
              "*filter\n"
              ":COFFER-VIP - [0:0]\n"
              "-A COFFER-VIP -d 10.0.1.4/32 -p tcp -j REJECT --reject-with tcp-reset\n"
              "-A COFFER-VIP -d 10.0.1.4/32 -j REJECT --reject-with icmp-port-unreachable\n"
              "-A OUTPUT -j COFFER-VIP\n"
              "COMMIT\n");
    // netb's VIPs are not in a neta-only task's rules; a task on netb gets them.
    EXPECT_EQ(rules.find("10.0.2."), std::string::npos);
    EXPECT_NE(coffer::agent::task_vip_rules(m, {"netb"}).find("-d 10.0.2.3/32 -j DNAT"),
              std::string::npos);
}

TEST(NetRules, VipRulesTakeNothingButAddresses) {
    auto m = two_networks();
    m.networks[0].services[0].vip = "10.0.1.3 -j ACCEPT";
    m.networks[0].services[0].tasks[0].address = "10.0.1.7\n-A OUTPUT -j ACCEPT";
    auto rules = coffer::agent::task_vip_rules(m, {"neta"});
    EXPECT_EQ(rules.find("ACCEPT"), std::string::npos);
    EXPECT_EQ(rules.find("10.0.1.3"), std::string::npos);
}

TEST(NetRules, IngressRulesDnatPublishedPortsAndMasqueradeThem) {
    NetworksMessage m;
    m.ingress.push_back({"s1", "tcp", 8080, 80, {"10.0.0.5", "10.0.0.6"}});
    m.ingress.push_back({"s2", "udp", 5353, 53, {"10.0.0.7"}});
    m.ingress.push_back({"s3", "tcp", 9090, 90, {}});
    EXPECT_EQ(coffer::agent::node_ingress_rules(m),
              "*nat\n"
              ":COFFER-INGRESS - [0:0]\n"
              ":COFFER-INGRESS-POSTROUTING - [0:0]\n"
              "-A COFFER-INGRESS -p tcp --dport 8080 -m statistic --mode random --probability "
              "0.50000000000 -j DNAT --to-destination 10.0.0.5:80\n"
              "-A COFFER-INGRESS -p tcp --dport 8080 -j DNAT --to-destination 10.0.0.6:80\n"
              "-A COFFER-INGRESS -p udp --dport 5353 -j DNAT --to-destination 10.0.0.7:53\n"
              "-A COFFER-INGRESS-POSTROUTING -d 10.0.0.5/32 -p tcp --dport 80 -m conntrack "
              "--ctstate DNAT --ctorigdstport 8080 -j MASQUERADE\n"
              "-A COFFER-INGRESS-POSTROUTING -d 10.0.0.6/32 -p tcp --dport 80 -m conntrack "
              "--ctstate DNAT --ctorigdstport 8080 -j MASQUERADE\n"
              "-A COFFER-INGRESS-POSTROUTING -d 10.0.0.7/32 -p udp --dport 53 -m conntrack "
              "--ctstate DNAT --ctorigdstport 5353 -j MASQUERADE\n"
              "-A PREROUTING -m addrtype --dst-type LOCAL -j COFFER-INGRESS\n"
              "-A OUTPUT -m addrtype --dst-type LOCAL -j COFFER-INGRESS\n"
              "-A POSTROUTING -j COFFER-INGRESS-POSTROUTING\n"
              "COMMIT\n");
}

TEST(NetRules, ApplyInNetnsWantsAnAbsolutePath) {
    auto r = coffer::agent::apply_in_netns("netns", "*nat\nCOMMIT\n");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, coffer::Errc::invalid_argument);
}

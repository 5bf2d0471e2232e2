mod common;
use common::*;

#[test]
fn four_subnets_get_four_different_pops() {
    let s = TestServer::start();
    let name = "www.aliyundoc.com.example.com.";
    assert_eq!(ask(s.udp, name, "115.236.1.0/24"), ["192.0.2.10"], "China Telecom Zhejiang -> cn-zj-ct-1");
    assert_eq!(ask(s.udp, name, "123.125.1.0/24"), ["192.0.2.20"], "China Unicom Beijing -> cn-bj-cu-1");
    assert_eq!(ask(s.udp, name, "2.16.1.0/24"), ["203.0.113.10"], "Germany -> de-fra-1");
    assert_eq!(ask(s.udp, name, "8.8.8.0/24"), ["203.0.113.40"], "US west -> us-west-1");
}

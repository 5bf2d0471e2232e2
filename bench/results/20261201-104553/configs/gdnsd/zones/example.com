$TTL 3600
@ SOA ns1.example.com. hostmaster.example.com. 2026113001 3600 600 1209600 60
@ NS ns1.example.com.
@ NS ns2.example.com.
ns1 A 192.0.2.53
ns2 A 198.51.100.53
mail A 192.0.2.25
sip A 192.0.2.60
www.aliyundoc.com 60 DYNA geoip!www

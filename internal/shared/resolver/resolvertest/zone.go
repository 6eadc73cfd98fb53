package resolvertest

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// Zone returns a Handler answering from records in zone-file syntax, like a
// recursive resolver would: the CNAME chain from the question name, then
// the records of the asked type at its end. A name with no records gets
// NXDOMAIN, a name without the asked type NOERROR with no answer; both
// carry the zone's first SOA record, if any, in the authority section. It
// panics on a record that does not parse, which is a broken test.
func Zone(records ...string) Handler {
	var rrs []dns.RR
	var soa dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil || rr == nil {
			panic(fmt.Sprintf("resolvertest: bad record %q: %v", s, err))
		}
		if rr.Header().Rrtype == dns.TypeSOA && soa == nil {
			soa = rr
			continue
		}
		rrs = append(rrs, rr)
	}
	return func(_ string, q *dns.Msg) *dns.Msg {
		resp := new(dns.Msg)
		resp.SetReply(q)
		resp.RecursionAvailable = true
		qq := q.Question[0]
		name, known := qq.Name, false
		for range 16 {
			next := ""
			for _, rr := range rrs {
				h := rr.Header()
				if !strings.EqualFold(h.Name, name) {
					continue
				}
				known = true
				switch {
				case h.Rrtype == qq.Qtype:
					resp.Answer = append(resp.Answer, dns.Copy(rr))
				case h.Rrtype == dns.TypeCNAME && next == "":
					resp.Answer = append(resp.Answer, dns.Copy(rr))
					next = rr.(*dns.CNAME).Target
				}
			}
			if next == "" || qq.Qtype == dns.TypeCNAME {
				break
			}
			name = next
		}
		if len(resp.Answer) == 0 {
			if !known {
				resp.Rcode = dns.RcodeNameError
			}
			if soa != nil {
				resp.Ns = []dns.RR{dns.Copy(soa)}
			}
		}
		return resp
	}
}

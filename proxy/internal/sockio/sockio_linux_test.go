//go:build linux

package sockio

import "testing"

func TestReleaseAtLeast(t *testing.T) {
	cases := []struct {
		release string
		want    bool
	}{
		{"6.18.44-fc-v782", true},
		{"4.6.0", true},
		{"4.19.0-27-amd64", true},
		{"5.4", true},
		{"4.5.7", false},
		{"3.10.0-1160.el7.x86_64", false},
		{"4.6rc1", true},
		{"4", false},
		{"", false},
		{"x.y", false},
		{"-5.10", false},
	}
	for _, c := range cases {
		if got := releaseAtLeast(c.release, 4, 6); got != c.want {
			t.Errorf("releaseAtLeast(%q, 4, 6): got %v, want %v", c.release, got, c.want)
		}
	}
}

// FuzzReleaseAtLeast: any release string parses without a panic, and a
// release that passes 4.6 passes every older version too.
func FuzzReleaseAtLeast(f *testing.F) {
	for _, s := range []string{"6.18.44-fc-v782", "3.10.0-1160.el7.x86_64", "4.6", "", "4.", ".6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, release string) {
		if releaseAtLeast(release, 4, 6) && !releaseAtLeast(release, 4, 1) {
			t.Errorf("%q: at least 4.6 but not 4.1", release)
		}
	})
}

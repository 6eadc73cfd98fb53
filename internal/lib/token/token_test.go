package token

import "testing"

func TestEqual(t *testing.T) {
	tests := []struct {
		got, want string
		ok        bool
	}{
		{"s3cret", "s3cret", true},
		{"s3cret", "s3cre", false},
		{"s3cre", "s3cret", false},
		{"", "", false},
		{"", "s3cret", false},
		{"S3cret", "s3cret", false},
	}
	for _, tt := range tests {
		if got := Equal(tt.got, tt.want); got != tt.ok {
			t.Errorf("Equal(%q, %q) = %v, want %v", tt.got, tt.want, got, tt.ok)
		}
	}
}

package meter

import (
	"fmt"
	"time"
)

// Periods, as written in budget.period.
const (
	PeriodDay   = "day"
	PeriodWeek  = "week" // starts Monday 00:00 UTC
	PeriodMonth = "month"
	PeriodTotal = "total" // never resets
)

func checkPeriod(p string) error {
	switch p {
	case PeriodDay, PeriodWeek, PeriodMonth, PeriodTotal:
		return nil
	}
	return fmt.Errorf("budget.period: %q is not day, week, month or total", p)
}

// periodStart is the start, in UTC, of the period that contains t. The
// total period starts at the zero time.
func periodStart(period string, t time.Time) time.Time {
	t = t.UTC()
	y, m, d := t.Date()
	switch period {
	case PeriodDay:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	case PeriodWeek:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		return time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC)
	case PeriodMonth:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}
}

// periodEnd is when the period starting at start resets; zero for total.
func periodEnd(period string, start time.Time) time.Time {
	switch period {
	case PeriodDay:
		return start.AddDate(0, 0, 1)
	case PeriodWeek:
		return start.AddDate(0, 0, 7)
	case PeriodMonth:
		return start.AddDate(0, 1, 0)
	}
	return time.Time{}
}

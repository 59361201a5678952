// gosleep: a Go program without database/sql, for GolangChaos's refusal tests.
package main

import "time"

func main() {
	time.Sleep(time.Hour)
}

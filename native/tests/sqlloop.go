// sqlloop: the target of GolangChaos's tests and `make bench`. Standard library only: a tiny
// database/sql driver defined here answers every query with one row (1). GOROUTINES goroutines
// query in a loop, alternating (*DB).Query and (*DB).QueryContext, and print each result:
//
//	UNIX_NS GOROUTINE query|querycontext ok N
//	UNIX_NS GOROUTINE query|querycontext err MESSAGE
//
// usage: sqlloop [GOROUTINES [INTERVAL_MS]]
package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

type oneRowDriver struct{}
type conn struct{}
type stmt struct{}
type rows struct{ done bool }

func (oneRowDriver) Open(string) (driver.Conn, error) { return conn{}, nil }
func (conn) Prepare(string) (driver.Stmt, error)      { return stmt{}, nil }
func (conn) Close() error                             { return nil }
func (conn) Begin() (driver.Tx, error)                { return nil, errors.New("no transactions") }
func (stmt) Close() error                             { return nil }
func (stmt) NumInput() int                            { return -1 }
func (stmt) Exec([]driver.Value) (driver.Result, error) {
	return nil, errors.New("no exec")
}
func (stmt) Query([]driver.Value) (driver.Rows, error) { return &rows{}, nil }
func (*rows) Columns() []string                         { return []string{"n"} }
func (*rows) Close() error                              { return nil }
func (r *rows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1)
	return nil
}

func arg(i int, def int) int {
	if len(os.Args) > i {
		if n, err := strconv.Atoi(os.Args[i]); err == nil {
			return n
		}
	}
	return def
}

var out sync.Mutex

func report(g int, kind string, rs *sql.Rows, err error) {
	line := ""
	if err != nil {
		line = "err " + err.Error()
	} else {
		n := 0
		for rs.Next() {
			if scanErr := rs.Scan(&n); scanErr != nil {
				line = "err " + scanErr.Error()
			}
		}
		rs.Close()
		if line == "" {
			line = "ok " + strconv.Itoa(n)
		}
	}
	out.Lock()
	fmt.Printf("%d %d %s %s\n", time.Now().UnixNano(), g, kind, line)
	out.Unlock()
}

func main() {
	goroutines, interval := arg(1, 2), time.Duration(arg(2, 20))*time.Millisecond
	sql.Register("chaosbus-one-row", oneRowDriver{})
	db, err := sql.Open("chaosbus-one-row", "")
	if err != nil {
		panic(err)
	}
	for g := 0; g < goroutines; g++ {
		go func(g int) {
			for i := 0; ; i++ {
				if i%2 == 0 {
					rs, err := db.Query("SELECT 1")
					report(g, "query", rs, err)
				} else {
					rs, err := db.QueryContext(context.Background(), "SELECT 1")
					report(g, "querycontext", rs, err)
				}
				time.Sleep(interval)
			}
		}(g)
	}
	select {}
}

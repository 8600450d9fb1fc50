package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/tallyhq/tally/httpapi/client"
)

// fakeRegions starts two tiny stand-ins for tally nodes, "us" and "eu",
// sharing one dedup state as replicated regions would.
func fakeRegions() (us, eu *httptest.Server) {
	var mu sync.Mutex
	seen := map[[2]string]bool{}
	counts := map[string]uint64{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("POST /videos/{id}/views", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			UserID string `json:"userId"`
		}
		json.NewDecoder(r.Body).Decode(&req) //nolint:errcheck // example
		video := r.PathValue("id")
		mu.Lock()
		defer mu.Unlock()
		out := map[string]any{"videoId": video, "counted": true}
		if k := [2]string{video, req.UserID}; seen[k] {
			out["counted"], out["reason"] = false, "duplicate"
		} else {
			seen[k] = true
			counts[video]++
		}
		out["viewCount"] = counts[video]
		json.NewEncoder(w).Encode(out) //nolint:errcheck // example
	})
	mux.HandleFunc("GET /videos/{id}/views", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{ //nolint:errcheck // example
			"videoId": r.PathValue("id"), "viewCount": counts[r.PathValue("id")], "lastUpdated": nil,
		})
	})
	return httptest.NewServer(mux), httptest.NewServer(mux)
}

func ExampleClient() {
	us, eu := fakeRegions()
	defer us.Close()
	defer eu.Close()

	c, err := client.New(client.Config{
		Regions: []client.Region{
			{Name: "us", Endpoints: []string{us.URL}},
			{Name: "eu", Endpoints: []string{eu.URL}},
		},
		Timeout:     time.Second, // per attempt
		MaxAttempts: 3,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Probe(ctx); err != nil { // measure RTTs once now...
		log.Fatal(err)
	}
	c.Start(ctx) // ...and every ProbeInterval until ctx ends

	for range 2 { // the second view of the same user is a duplicate
		r, err := c.RecordView(ctx, "dQw4w9WgXcQ", "user-42", time.Now())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("counted=%v reason=%q views=%d attempts=%d\n", r.Counted, r.Reason, r.ViewCount, r.Attempts)
	}
	n, err := c.Views(ctx, "dQw4w9WgXcQ")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("views:", n.ViewCount)
	for _, e := range c.Endpoints() {
		fmt.Printf("%s healthy=%v breaker=%s\n", e.Region, e.Healthy, e.Breaker)
	}
	// Output:
	// counted=true reason="" views=1 attempts=1
	// counted=false reason="duplicate" views=1 attempts=1
	// views: 1
	// us healthy=true breaker=closed
	// eu healthy=true breaker=closed
}

package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// client speaks to the scheduled events endpoint.
type client struct {
	http *http.Client
	url  string // the endpoint with its api-version
}

func newClient(hc *http.Client, endpoint string) *client {
	return &client{http: hc, url: endpoint + eventsPath + "?api-version=" + apiVersion}
}

// get reads the document. An answer other than 200 is a ReadError with
// ReasonHTTP; transport errors keep their own reason.
func (c *client) get(ctx context.Context) ([]byte, error) {
	return c.do(ctx, http.MethodGet, nil)
}

// start approves the events with the given EventIds.
func (c *client) start(ctx context.Context, eventIDs ...string) error {
	type startRequest struct {
		EventID string `json:"EventId"`
	}
	req := struct {
		StartRequests []startRequest `json:"StartRequests"`
	}{}
	for _, id := range eventIDs {
		req.StartRequests = append(req.StartRequests, startRequest{EventID: id})
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding StartRequests: %w", err)
	}
	_, err = c.do(ctx, http.MethodPost, body)
	return err
}

func (c *client) do(ctx context.Context, method string, reqBody []byte) ([]byte, error) {
	var r io.Reader
	if reqBody != nil {
		r = bytes.NewReader(reqBody)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url, r)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, eventsPath, err)
	}
	req.Header.Set("Metadata", "true")
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, eventsPath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, eventsPath, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &interruption.ReadError{
			Reason: interruption.ReasonHTTP,
			Err:    fmt.Errorf("%s %s: HTTP %d (body %q)", method, eventsPath, resp.StatusCode, excerpt(string(body))),
		}
	}
	if len(body) > maxBody {
		return nil, malformed(body, "answer longer than %d bytes", maxBody)
	}
	return body, nil
}

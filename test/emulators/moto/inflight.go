package moto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// SQS lets a message stay in flight at most 12 hours from its receipt: a
// ChangeMessageVisibility that would keep it invisible longer is refused
// with InvalidParameterValue. moto does not enforce it; the proxy does,
// with the bound shortened for tests (LimitInFlight).

// sqsMaxInFlight is SQS's own bound, named in its error message.
const sqsMaxInFlight = 12 * time.Hour

// LimitInFlight makes the proxy refuse, as SQS does past 12 hours, a
// ChangeMessageVisibility that would keep a message in flight longer than
// d from its receipt. Zero lifts the limit. Call it before the proxy
// serves.
func (p *LifecycleProxy) LimitInFlight(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlightLimit = d
	if p.receipts == nil {
		p.receipts = map[string]time.Time{}
	}
}

// limitingInFlight says whether LimitInFlight is in force.
func (p *LifecycleProxy) limitingInFlight() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inFlightLimit > 0
}

// recordReceipts notes when each message a ReceiveMessage answer carries
// was received.
func (p *LifecycleProxy) recordReceipts(resp *http.Response) error {
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var out struct {
		Messages []struct{ ReceiptHandle string }
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	for _, m := range out.Messages {
		p.receipts[m.ReceiptHandle] = now
	}
	return nil
}

// overLimit answers a ChangeMessageVisibility that would keep its message
// in flight past the limit, as SQS does, and reports whether it did.
func (p *LifecycleProxy) overLimit(w http.ResponseWriter, r *http.Request) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return false
	}
	var in struct {
		ReceiptHandle     string
		VisibilityTimeout int64
	}
	if json.Unmarshal(body, &in) != nil {
		return false
	}
	p.mu.Lock()
	received, ok := p.receipts[in.ReceiptHandle]
	over := ok && p.clock.Now().Add(time.Duration(in.VisibilityTimeout)*time.Second).After(received.Add(p.inFlightLimit))
	p.mu.Unlock()
	if !over {
		return false
	}
	writeError(w, protoSQSJSON, http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf(
		"Value %d for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [%d seconds].",
		in.VisibilityTimeout, int(sqsMaxInFlight/time.Second)))
	return true
}

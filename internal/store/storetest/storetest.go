// Package storetest is the conformance suite of store.Store. Every backend
// runs it unchanged from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openTestStore(t) })
//	}
//
// The suite checks the contract documented on store.Store and the transition
// rules of package job as the callers of a store observe them: states,
// versions, leases, blobs, ordering, deduplication and admission.
//
// Every subtest opens its own empty store and most run in parallel, so a
// backend must support several open stores at once. Times are compared with a
// tolerance of one millisecond, which admits backends that keep microseconds.
package storetest

import (
	"testing"

	"github.com/docket/docket/internal/store"
)

// Run runs the whole suite. open returns a fresh, empty store for each
// subtest; the backend's helper registers its cleanup with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	o := opener(open)
	tests := []struct {
		name string
		fn   func(*testing.T, opener)
	}{
		{"Insert", testInsert},
		{"IdempotencyKey", testIdempotencyKey},
		{"Unique", testUnique},
		{"MaxQueued", testMaxQueued},
		{"Get", testGet},
		{"Claim", testClaim},
		{"ClaimConcurrent", testClaimConcurrent},
		{"Heartbeat", testHeartbeat},
		{"Progress", testProgress},
		{"LeaseLost", testLeaseLost},
		{"Complete", testComplete},
		{"CompleteKnown", testCompleteKnown},
		{"Release", testRelease},
		{"LargeResult", testLargeResult},
		{"Fail", testFail},
		{"Cancel", testCancel},
		{"Retry", testRetry},
		{"Delete", testDelete},
		{"Rescue", testRescue},
		{"Purge", testPurge},
		{"List", testList},
		{"QueueCounts", testQueueCounts},
		{"NextRunAt", testNextRunAt},
		{"Versions", testVersions},
		{"Times", testTimes},
		{"WebhookJob", testWebhookJob},
		{"Deliveries", testDeliveries},
		{"DeliveryLease", testDeliveryLease},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, o)
		})
	}
}

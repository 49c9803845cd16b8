// The official Go client (cloud.google.com/go/datastore, gRPC), unmodified, driven
// against a Datastore server by node/tests/clients/test_official_clients.py: the seed
// document's write-then-read of a User, a filtered query, a transaction, and the error an insert of
// an existing entity gets. The address
// comes from DATASTORE_EMULATOR_HOST and the project from DATASTORE_PROJECT_ID, as for
// every official client. It prints one JSON line mapping each scenario to what it
// observed, or to {"error": ...} when the scenario failed.
package main

import (
	"context"
	"encoding/json"
	stderrors "errors"
	"fmt"
	"os"
	"time"

	"cloud.google.com/go/datastore"
	"google.golang.org/grpc/status"
)

// User is the seed document's entity.
type User struct {
	Name  string `datastore:"name"`
	Email string `datastore:"email"`
}

// Task is a row of the filtered query.
type Task struct {
	I    int64 `datastore:"i"`
	Even bool  `datastore:"even"`
}

// Account is what the transactions move money out of.
type Account struct {
	Balance int64 `datastore:"balance"`
}

// seed writes the User keyed by name and reads it back.
func seed(ctx context.Context, client *datastore.Client) (any, error) {
	key := datastore.NameKey("User", "John Doe", nil)
	if _, err := client.Put(ctx, key, &User{Name: "John Doe", Email: "john.doe@example.com"}); err != nil {
		return nil, err
	}
	var got User
	if err := client.Get(ctx, key, &got); err != nil {
		return nil, err
	}
	return map[string]string{"name": got.Name, "email": got.Email}, nil
}

// query saves four tasks and asks for the even ones in order.
func query(ctx context.Context, client *datastore.Client) (any, error) {
	keys := make([]*datastore.Key, 4)
	tasks := make([]*Task, 4)
	for i := range keys {
		keys[i] = datastore.IDKey("Task", int64(i+1), nil)
		tasks[i] = &Task{I: int64(i + 1), Even: (i+1)%2 == 0}
	}
	if _, err := client.PutMulti(ctx, keys, tasks); err != nil {
		return nil, err
	}
	var rows []Task
	q := datastore.NewQuery("Task").FilterField("even", "=", true).Order("i")
	if _, err := client.GetAll(ctx, q, &rows); err != nil {
		return nil, err
	}
	is := []int64{}
	for _, r := range rows {
		is = append(is, r.I)
	}
	return map[string]any{"rows": is}, nil
}

// transaction takes 30 out of 100 in a committed transaction, then writes 0 in one that
// is rolled back: 70 must remain.
func transaction(ctx context.Context, client *datastore.Client) (any, error) {
	key := datastore.NameKey("Account", "acc", nil)
	if _, err := client.Put(ctx, key, &Account{Balance: 100}); err != nil {
		return nil, err
	}
	_, err := client.RunInTransaction(ctx, func(tx *datastore.Transaction) error {
		var acc Account
		if err := tx.Get(key, &acc); err != nil {
			return err
		}
		acc.Balance -= 30
		_, err := tx.Put(key, &acc)
		return err
	})
	if err != nil {
		return nil, err
	}
	var afterCommit Account
	if err := client.Get(ctx, key, &afterCommit); err != nil {
		return nil, err
	}
	tx, err := client.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Put(key, &Account{Balance: 0}); err != nil {
		return nil, err
	}
	if err := tx.Rollback(); err != nil {
		return nil, err
	}
	var afterRollback Account
	if err := client.Get(ctx, key, &afterRollback); err != nil {
		return nil, err
	}
	return map[string]int64{"afterCommit": afterCommit.Balance, "afterRollback": afterRollback.Balance}, nil
}

// errors inserts an entity that exists: the gRPC code the client reports.
func errors(ctx context.Context, client *datastore.Client) (any, error) {
	key := datastore.NameKey("Unique", "u", nil)
	if _, err := client.Put(ctx, key, &Account{Balance: 1}); err != nil {
		return nil, err
	}
	_, err := client.Mutate(ctx, datastore.NewInsert(key, &Account{Balance: 2}))
	if err == nil {
		return map[string]string{"insert": "succeeded"}, nil
	}
	var multi datastore.MultiError
	if stderrors.As(err, &multi) && len(multi) == 1 {
		err = multi[0]
	}
	st := status.Convert(err)
	return map[string]any{"code": int(st.Code()), "message": st.Message()}, nil
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := datastore.NewClient(ctx, os.Getenv("DATASTORE_PROJECT_ID"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "datastore.NewClient:", err)
		os.Exit(1)
	}
	defer client.Close()
	out := map[string]any{}
	for _, s := range []struct {
		name string
		run  func(context.Context, *datastore.Client) (any, error)
	}{{"seed", seed}, {"query", query}, {"transaction", transaction}, {"errors", errors}} {
		result, err := s.run(ctx, client)
		if err != nil {
			result = map[string]string{"error": err.Error()}
		}
		out[s.name] = result
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}

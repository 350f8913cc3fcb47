// Child process for StoreTests. Commands (stdout is read by the test):
//   sweep DIR N EPOCHS   register N configs, print "ready", wait for a line on stdin, then try to
//                        claim each run in turn and run it (prune report, epochs, finish); prints
//                        "claimed KEY" per claim and "done" at the end.
//   hang DIR CONFIG_JSON EPOCHS
//                        register and claim one run, record its prune report and EPOCHS epochs,
//                        print "recorded", then wait to be killed.

var command = args[0];
using var store = new SqliteRunStore(args[1]);
switch (command)
{
    case "sweep":
    {
        var n = int.Parse(args[2]);
        var epochs = int.Parse(args[3]);
        var keys = store.RegisterAll(Enumerable.Range(0, n).Select(SweepConfig));
        Console.WriteLine("ready");
        Console.In.ReadLine();
        foreach (var key in keys)
        {
            if (!store.TryClaim(key)) continue;
            Console.WriteLine($"claimed {key}");
            Run(store, key, epochs);
            store.Finish(key, new RunRecord
            {
                Key = key, Config = store.Get(key)!.Config, FinalTop1 = 0.5, FinalLoss = 1.0,
                Seeds = new Dictionary<string, ulong> { ["init"] = (ulong)Environment.ProcessId },
            });
        }
        Console.WriteLine("done");
        return 0;
    }
    case "hang":
    {
        var key = store.Register(RunConfig.FromJson(args[2]));
        if (!store.TryClaim(key))
        {
            Console.WriteLine("not-claimed");
            return 2;
        }
        Run(store, key, int.Parse(args[3]));
        Console.WriteLine("recorded");
        Thread.Sleep(Timeout.Infinite);
        return 0;
    }
    default:
        Console.Error.WriteLine($"unknown command {command}");
        return 1;
}

static RunConfig SweepConfig(int i) => new() { Criterion = "snip", Sparsity = 0.5, Seed = (ulong)i, Epochs = 3 };

static void Run(SqliteRunStore store, string key, int epochs)
{
    store.RecordPrune(key, new PruneSummary("snip", [new LayerDensityRecord("fc", 5, 10)], [], 1, 0.5),
        new Dictionary<string, double> { ["scoring"] = 0.1 });
    for (var e = 1; e <= epochs; e++)
    {
        Thread.Sleep(2); // leave other workers time to contend for the next claim
        store.RecordEpoch(key, new EpochMetrics(e, 1.0 / e, 0.1 * e, 0.1, null, null, null, 0.01));
    }
}

using System.CommandLine;
using Pai.Cli;

return PaiCommand.Build().Parse(args).Invoke();
